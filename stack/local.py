"""The real stack on 127.0.0.1 for the benchmarks: a private redis-server, Label Studio, `lsal serve` and
`lsal worker`, each registered with `stops` so that everything started is stopped at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stack.annotator import LabelStudio
from stack.processes import (
    DEFAULT_LS_BIN,
    ManagedProcess,
    Stops,
    free_port,
    lsal_command,
    redis_process,
    wait_for_redis,
)
from stack.runs import BenchError, say

REPO = Path(__file__).resolve().parents[1]


def start_redis(workdir: Path, stops: Stops) -> tuple[str, ManagedProcess]:
    """A private redis-server in `workdir/redis` on a free port; its URL and process."""
    port = free_port()
    (workdir / "redis").mkdir(parents=True, exist_ok=True)
    process = redis_process(workdir / "redis", port)
    process.log_path = workdir / "logs" / "redis.log"
    stops.add("redis-server", process.stop)
    process.start()
    wait_for_redis(process, port)
    say(f"redis-server pid {process.pid} on port {port}")
    return f"redis://127.0.0.1:{port}/0", process


def start_label_studio(workdir: Path, stops: Stops) -> LabelStudio:
    """Label Studio with a data dir in `workdir/label-studio` (fresh: ~40 s of migrations) and a working token."""
    server = LabelStudio(workdir / "label-studio", ls_bin=DEFAULT_LS_BIN, log_path=workdir / "logs" / "label-studio.log",
                         log_level="WARNING")
    stops.add("Label Studio", server.stop)
    fresh = not (server.data_dir / "label_studio.sqlite3").exists()
    say("starting Label Studio" + (" (fresh data dir: migrations take ~40 s)" if fresh else ""))
    server.start(timeout=600 if fresh else 180)
    if not server.token_works():
        raise BenchError(f"Label Studio refuses the local admin token: {server.data_dir} was not created by lsal "
                         "tooling; use a fresh --workdir")
    say(f"Label Studio pid {server.pid} at {server.url}")
    return server


@dataclass
class Services:
    """`lsal serve` and `lsal worker` of one stack."""

    backend: ManagedProcess
    worker: ManagedProcess
    url: str

    def alive(self) -> None:
        """BenchError with the log's tail when either process exited."""
        for process in (self.backend, self.worker):
            if not process.running:
                raise BenchError(f"{process.name} exited with {process.proc.returncode}; log {process.log_path}:\n"
                                 f"{process.log_tail()}")


def start_services(workdir: Path, stops: Stops, env: dict[str, str], worker_args: tuple[str, ...] = ()) -> Services:
    """`lsal serve` on a free port and one `lsal worker`, with environment `env`; waits until both are up."""
    from redis import Redis
    from rq import Worker

    logs = workdir / "logs"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    backend = ManagedProcess("lsal serve", lsal_command("serve", "--host", "127.0.0.1", "--port", str(port),
                                                        "--log-level", "warning"), logs / "backend.log", env,
                             cwd=REPO, inherit_env=False)
    worker = ManagedProcess("lsal worker", lsal_command("worker", *worker_args), logs / "worker.log", env,
                            cwd=REPO, inherit_env=False)
    stops.add("lsal serve", backend.stop)
    stops.add("lsal worker", worker.stop)
    backend.start()
    worker.start()
    redis = Redis.from_url(env["REDIS_URL"])
    stops.add("the Redis client", redis.close)
    backend.wait_http(f"{url}/health", timeout=180)
    worker.wait_until(lambda: Worker.count(connection=redis) > 0, 180, "worker registration")
    say(f"lsal serve pid {backend.pid} at {url}; lsal worker pid {worker.pid}")
    return Services(backend, worker, url)
