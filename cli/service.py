"""`lsal serve` and `lsal worker`: the two long-running processes."""

from __future__ import annotations

import importlib.util
import logging
from typing import Annotated, Any

import typer
from redis import Redis
from rq import SimpleWorker, Worker, worker_registration

from core.config import Settings, get_settings
from core.queueing import SERIALIZER


class _Reregistering:
    """A worker that registers itself again when Redis has lost its record (a restart without persistence):
    otherwise it keeps working but `lsal status`, `lsal doctor` and rq-dashboard no longer list it."""

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's heartbeat, after re-registering the worker if its key is gone."""
        if not self.connection.exists(self.key):
            self.log.warning("Worker %s: Redis lost this worker's record (restarted without its data?); "
                             "registering it again", self.name)
            with self.connection.pipeline() as p:
                p.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, p)
                p.execute()
        super().heartbeat(timeout, pipeline)


class ForkWorker(_Reregistering, Worker):
    """RQ's Worker (a work horse forked per job) that survives a Redis data loss in the listings."""


class InProcessWorker(_Reregistering, SimpleWorker):
    """RQ's SimpleWorker (jobs in the worker process) that survives a Redis data loss in the listings."""


def worker_class(kind: str) -> type[Worker]:
    """'fork' (a child per job: a crash or leak dies with it), 'simple' (no fork: CUDA-safe, models stay
    loaded), or 'auto' (simple when a CUDA device is present, fork otherwise)."""
    if kind == "auto":
        import torch

        kind = "simple" if torch.cuda.is_available() else "fork"
    classes = {"fork": ForkWorker, "simple": InProcessWorker}
    if kind not in classes:
        raise ValueError(f"worker class must be auto, fork or simple, got {kind!r}")
    return classes[kind]


def run_worker(settings: Settings, kind: str = "auto", burst: bool = False, name: str | None = None,
               queues: list[str] | None = None) -> bool:
    """Work the queue(s) until stopped (or, with `burst`, until empty); jobs are imported by RQ by path."""
    if importlib.util.find_spec("worker.jobs") is None:
        raise RuntimeError("the job code (package 'worker') is not installed beside the backend")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    redis = Redis.from_url(settings.redis_url)
    w = worker_class(kind)(queues or [settings.queue], connection=redis, name=name, serializer=SERIALIZER)
    # the scheduler runs the retries of failed jobs (queueing.RETRY_INTERVALS_S)
    return w.work(burst=burst, logging_level="INFO", with_scheduler=True)


def serve(host: Annotated[str, typer.Option(help="interface to listen on")] = "0.0.0.0",
          port: Annotated[int, typer.Option(help="port (Label Studio connects to http://<host>:<port>)")] = 9090,
          workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
          log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info") -> None:
    """Run the ML backend (Label Studio connects to it in Settings -> Model)."""
    import uvicorn

    from backend.serving import serve_options

    uvicorn.run("backend.asgi:app", host=host, port=port, workers=workers, log_level=log_level,
                proxy_headers=True, **serve_options(get_settings()))


def worker(worker_kind: Annotated[str, typer.Option("--class", help="auto, fork or simple")] = "auto",
           burst: Annotated[bool, typer.Option(help="exit when the queue is empty")] = False,
           name: Annotated[str | None, typer.Option(help="worker name (default: RQ's)")] = None,
           queue: Annotated[list[str] | None, typer.Option(help="queue(s) to work (default: LSAL_QUEUE)")] = None,
           ) -> None:
    """Run an RQ worker that retrains, rescores and publishes (CUDA when present)."""
    try:
        run_worker(get_settings(), worker_kind, burst=burst, name=name, queues=queue)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
