"""Benchmark: the closed loop's latency on a large image project whose embeddings are cached (docs/performance.md).

Starts everything on 127.0.0.1 (a private redis-server, Label Studio with a fresh data dir, `lsal serve`, one
`lsal worker`, an HTTP server for scikit-learn's 1,797 digits as PNG files, cycled over the tasks) and stops it
at the end. The project's defaults: the frozen MobileNetV2 encoder (ImageNet weights, --size px) with the
logistic head on its cached 1280-d embeddings, --strategy, a retrain every --every annotations, one rescore job
(no shards).

1. --tasks tasks are imported into Label Studio and the backend is connected as an admin does.
2. Warm-up (timed, reported apart): --initial annotations through Label Studio's API; the first retrain and its
   rescore embed every task once (the first-time embedding throughput) and publish v1.
3. --rounds timed rounds: --every annotations in Label Studio's /next order; the clock runs from the POST of the
   annotation that triggers the retrain until Label Studio serves the new version's first-ranked task at /next
   (retrain the head, rescore the whole pool from the cache, import the predictions, switch the order).

    .venv/bin/python bench/loop_latency.py                         # 50,000 tasks, 3 rounds (~15 min here)
    .venv/bin/python bench/loop_latency.py --tasks 5000 --rounds 2 # a quick run
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stack.annotator import DIGITS_LABEL_CONFIG, DIGITS_INTERFACE  # noqa: E402
from stack.digits import write_digits  # noqa: E402
from stack.http import Client, secret_auth  # noqa: E402
from stack.images import ImageServer  # noqa: E402
from stack.local import start_label_studio, start_redis, start_services  # noqa: E402
from stack.processes import Stops, lsal_env  # noqa: E402
from stack.runs import BenchError, run_main, say, table, wait_for  # noqa: E402
from stack.settings import service_env  # noqa: E402

IMPORT_CHUNK = 5000  # tasks per import request


def run(args: argparse.Namespace, stops: Stops, workdir: Path) -> int:
    say(f"workdir {workdir}")
    files, labels = write_digits(workdir / "images", range(1797))
    images = ImageServer(workdir / "images").start()
    stops.add("the image server", images.stop)
    cycle = images.urls(files)
    urls = [f"{cycle[i % len(cycle)]}?task={i}" for i in range(args.tasks)]  # one distinct URL per task
    truth = {u: labels[i % len(cycle)] for i, u in enumerate(urls)}

    redis_url, _ = start_redis(workdir, stops)
    ls_server = start_label_studio(workdir, stops)
    secret = secrets.token_hex(16)
    defaults = {"strategy": {"name": args.strategy}, "model": {"name": "logistic", "params": {"committee": 4}},
                "encoder": {"name": "mobilenet_v2", "params": {"size": args.size}}, "retrain_every": args.every,
                "min_labels": args.initial, "holdout_fraction": 0.2, "shard_size": max(args.tasks + 1, 20_000),
                "stream": False}
    env = lsal_env(service_env(label_studio_url=ls_server.url, token=ls_server.token, redis_url=redis_url,
                               secret=secret, model_dir=workdir / "models", image_hosts=images.host,
                               defaults=defaults, OMP_NUM_THREADS=str(args.threads), LSAL_RECONCILE_S="0",
                               LSAL_CACHE_DIR=str(Path.home() / ".cache" / "lsal")))
    services = start_services(workdir, stops, env, ("--class", "simple"))

    def alive() -> None:
        services.alive()
        if ls_server.process is not None and not ls_server.process.running:
            raise BenchError(f"Label Studio exited; log {ls_server.process.log_path}")

    ls = ls_server.annotator(error=BenchError, timeout=600)
    admin = Client(services.url, secret_auth(secret), name="the backend", error=BenchError, timeout=120)
    project = ls.create_project("loop latency", DIGITS_LABEL_CONFIG)
    started = time.perf_counter()
    for start in range(0, len(urls), IMPORT_CHUNK):
        ls.import_urls(project, urls[start:start + IMPORT_CHUNK])
        say(f"imported {min(start + IMPORT_CHUNK, len(urls))}/{len(urls)} tasks")
    import_s = time.perf_counter() - started
    ls.connect_ml_backend(project, services.url, "lsal", secret)

    def status() -> dict[str, Any]:
        return admin.call("GET", f"/admin/projects/{project}/status", "status")

    wait_for(lambda: status()["webhook_url"] == f"{services.url}/webhook", 120, "the webhook registration", alive,
             interval=0.1)

    def label_next(n: int) -> float:
        """Annotate `n` tasks in /next order with their true class; the time of the last POST."""
        posted = 0.0
        for _ in range(n):
            task = ls.next_task(project)
            if task is None:
                raise BenchError("Label Studio has no task left to label")
            posted = time.perf_counter()
            ls.annotate(task, truth[task["data"]["image"]], DIGITS_INTERFACE)
        return posted

    def live(version: str) -> dict[str, Any] | None:
        s = status()
        published = s.get("published") or {}
        if published.get("version") != version:
            return None
        task = ls.next_task(project)
        return s if task is not None and task["id"] == published["top"][0] else None

    say(f"warm-up: {args.initial} annotations; the first rescore embeds all {args.tasks} tasks")
    t0 = label_next(args.initial)
    first = wait_for(lambda: live("v1"), args.timeout, "v1 live in Label Studio", alive, interval=1.0)
    warm_s = time.perf_counter() - t0
    embed_s = ((first.get("last_rescore") or {}).get("timings") or {}).get("load_inputs")
    say(f"v1 live after {warm_s:.1f} s (rescore's load_inputs {embed_s} s)")

    rows, latencies = [], []
    for number in range(2, args.rounds + 2):
        version = f"v{number}"
        label_next(args.every - 1)
        t0 = label_next(1)
        s = wait_for(lambda: live(version), args.timeout, f"{version} live in Label Studio", alive, interval=0.1)
        latency = time.perf_counter() - t0
        latencies.append(latency)
        retrain = (s.get("last_retrain") or {}).get("timings") or {}
        rescore = (s.get("last_rescore") or {}).get("timings") or {}
        rows.append([version, f"{latency:.1f}", *(f"{job.get(k, float('nan')):.2f}" for job, k in (
            (retrain, "fetch_tasks"), (retrain, "load_inputs"), (retrain, "train"), (rescore, "fetch_tasks"),
            (rescore, "load_inputs"), (rescore, "inference"), (rescore, "strategy"), (rescore, "publish")))])
        say(f"{version}: live {latency:.1f} s after the annotation that triggered it; retrain {json.dumps(retrain)}; "
            f"rescore {json.dumps(rescore)}")

    print(f"\nLoop latency, {args.tasks} tasks, MobileNetV2 at {args.size} px (cached), logistic head, "
          f"{args.strategy}; {args.threads} torch thread(s)\n")
    print(f"import: {import_s:.1f} s; warm-up (first retrain + first-time embedding of the pool + publish): "
          f"{warm_s:.1f} s, of which the rescore's load_inputs {embed_s} s "
          f"({args.tasks / embed_s:.0f} images/s)" if embed_s else f"import {import_s:.1f} s; warm-up {warm_s:.1f} s")
    print(table(["version", "annotation -> live s", "retrain: fetch_tasks", "load_inputs", "train",
                 "rescore: fetch_tasks", "load_inputs", "inference", "strategy", "publish"], rows))
    median = statistics.median(latencies)
    print(f"\nmedian {median:.1f} s over {len(latencies)} rounds; goal <= 15 s: {'met' if median <= 15 else 'NOT met'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--initial", type=int, default=20, help="annotations before the first retrain")
    parser.add_argument("--every", type=int, default=5, help="annotations per retrain")
    parser.add_argument("--size", type=int, default=64, help="the encoder's input size in px")
    parser.add_argument("--strategy", default="margin")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the services")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for one version to go live")
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lsal-latency-"))
    return run_main(run, args, workdir)


if __name__ == "__main__":
    raise SystemExit(main())
