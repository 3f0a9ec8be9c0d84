"""Benchmark: /predict under concurrent requests, a naive reference, and a memory soak (docs/reliability.md).

Starts what it needs on 127.0.0.1 and stops it by PID at the end (also on Ctrl-C, SIGTERM or an error): a
private redis-server on a free port, `lsal serve` (no Label Studio: /predict needs only Redis, the model dir
and the images), and an http.server child process with scikit-learn digits as 32x32 PNGs (allowed through
LSAL_IMAGE_HOSTS). A logistic model (committee 1) is trained on the digits that are *not* served, saved as
MODEL_DIR/project-1/v1.pt and registered as project 1's serving version, with the project's settings
(8x8 grayscale).

1. Reference, in this process, one request at a time: the same 8-task requests answered (a) by a naive
   path that reads the model from disk for every request (`load_artifact` + `predict_proba`) and (b) by the
   service's own path (`ModelCache` + `Predictor.predict`, which also reads Redis, fetches and decodes the
   8 images over HTTP and builds Label Studio's result JSON). Reported for the model step alone on 8
   decoded images (the served logistic model, and the default cnn plugin's artifact for comparison), and
   for the whole request with the same image fetching on both sides.
2. Load: --clients client threads (one keep-alive httpx client each) POST /predict with 8 tasks per request,
   back to back, for --seconds: requests/s, tasks/s, p50/p95/p99 latency.
3. Soak: the same load for --soak-seconds while the backend's RSS is sampled every second (psutil): RSS
   idle, at the start, after warm-up (the first 20%), at the end, the max, and the slope of the last 80%.

Checks (exit 1 when one fails): every request 200 with 8 predictions from model v1; RSS growth over the soak
(median of the last 10 samples minus median of the 10 after warm-up) below --max-growth-mib; the model read
from disk once (`lsal_model_loads_total` = 1 on /metrics after the load and after the soak).

    .venv/bin/python bench/predict_load.py                                  # 30 s load + 300 s soak
    .venv/bin/python bench/predict_load.py --seconds 5 --soak-seconds 20    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stack.annotator import DIGITS_LABEL_CONFIG
from stack.digits import prepare_digits
from stack.images import ImageServer
from stack.processes import ManagedProcess, Stops, free_port, lsal_command, lsal_env, redis_process, wait_for_redis
from stack.runs import BenchError, pct, run_main, say, table
from stack.settings import FAST_SETTINGS

PROJECT = 1
TASKS_PER_REQUEST = 8
N_SERVED = 512  # digits served as images (the model is trained on the other 1,285)

# --------------------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    seconds: float
    latencies_s: list[float]
    done_at: list[float]  # seconds after the start, per request
    errors: list[str]

    @property
    def requests(self) -> int:
        return len(self.latencies_s)


def request_bodies(urls: list[str]) -> list[bytes]:
    """8-task /predict bodies over the served digits, as Label Studio sends them."""
    bodies = []
    for start in range(0, len(urls) - TASKS_PER_REQUEST + 1, TASKS_PER_REQUEST):
        tasks = [{"id": 1000 + start + k, "data": {"image": urls[start + k]}} for k in range(TASKS_PER_REQUEST)]
        bodies.append(json.dumps({"tasks": tasks, "project": f"{PROJECT}.1700000000",
                                  "label_config": DIGITS_LABEL_CONFIG}).encode())
    return bodies


def check_answer(response: httpx.Response) -> str:
    """'' when the answer is 8 predictions from v1; else what is wrong."""
    if response.status_code != 200:
        return f"HTTP {response.status_code} {response.text[:200]}"
    results = response.json().get("results") or []
    if len(results) != TASKS_PER_REQUEST:
        return f"{len(results)} results for {TASKS_PER_REQUEST} tasks"
    missing = [r.get("error") for r in results if not r.get("result")]
    if missing:
        return f"{len(missing)} tasks without a prediction ({missing[0]})"
    return ""


def load(url: str, bodies: list[bytes], clients: int, seconds: float) -> LoadResult:
    """`clients` threads posting `bodies` (round robin) back to back for `seconds`."""
    latencies: list[float] = []
    done_at: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    t0 = time.perf_counter()
    deadline = t0 + seconds

    def work(index: int) -> None:
        mine_lat, mine_done, mine_err = [], [], []
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=url, timeout=30.0, limits=limits,
                          headers={"Content-Type": "application/json"}) as client:
            i = index * 7
            while not stop.is_set() and time.perf_counter() < deadline:
                body = bodies[i % len(bodies)]
                i += 1
                sent = time.perf_counter()
                try:
                    problem = check_answer(client.post("/predict", content=body))
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                now = time.perf_counter()
                mine_lat.append(now - sent)
                mine_done.append(now - t0)
                if problem:
                    mine_err.append(problem)
        with lock:
            latencies.extend(mine_lat)
            done_at.extend(mine_done)
            errors.extend(mine_err)

    threads = [threading.Thread(target=work, args=(i,), name=f"client-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except BaseException:
        stop.set()
        raise
    return LoadResult(time.perf_counter() - t0, latencies, done_at, errors)


def load_row(name: str, r: LoadResult, clients: int) -> list[Any]:
    lat = [x * 1000 for x in r.latencies_s]
    rate = r.requests / r.seconds
    return [name, clients, r.requests, f"{rate:.1f}", f"{rate * TASKS_PER_REQUEST:.0f}", f"{pct(lat, 50):.1f}", f"{pct(lat, 95):.1f}", f"{pct(lat, 99):.1f}", f"{max(lat):.1f}", len(r.errors)]


class RssSampler(threading.Thread):
    """The backend's RSS (with any children) every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        import psutil

        super().__init__(name="rss-sampler", daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.stop_event = threading.Event()

    def rss_mib(self) -> float:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop_event.is_set():
            self.samples.append((time.monotonic() - t0, self.rss_mib()))
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


def model_loads(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    m = re.search(r"^lsal_model_loads_total ([0-9.e+]+)$", text, re.MULTILINE)
    if m is None:
        raise BenchError("lsal_model_loads_total is missing from /metrics")
    return float(m.group(1))


# --------------------------------------------------------------------------------------------------------
# The in-process reference
# --------------------------------------------------------------------------------------------------------


def reference(settings, redis, artifact_path: Path, bodies: list[bytes], seconds: float) -> dict[str, dict[str, float]]:
    """ms per request, one at a time, for the naive and the service path (model step alone, for the served
    logistic model and for the default cnn plugin, and the whole request)."""
    from core.image_fetch import ImageFetcher
    from core.model_cache import ModelCache
    from backend.predictor import Predictor
    from core.store import ProjectStore
    from plugins.models.artifact import load_artifact

    requests = [json.loads(b) for b in bodies]
    fetcher = ImageFetcher(settings, None)
    items = [[(t["id"], t["data"]["image"]) for t in r["tasks"]] for r in requests]
    decoded = [fetcher.load_many(it, 8, 1)[1] for it in items[:32]]
    cache = ModelCache(settings.model_dir)
    predictor = Predictor(settings, cache, redis)
    store = ProjectStore(redis, PROJECT)

    def naive_model(i: int) -> None:
        load_artifact(artifact_path).model.predict_proba(decoded[i % len(decoded)])

    def our_model(i: int) -> None:
        cache.get(PROJECT, "v1").model.predict_proba(decoded[i % len(decoded)])

    def naive_request(i: int) -> None:
        _, x, skipped = fetcher.load_many(items[i % len(items)], 8, 1)
        assert not skipped and len(x) == TASKS_PER_REQUEST
        load_artifact(artifact_path).model.predict_proba(x)

    def our_request(i: int) -> None:
        r = requests[i % len(requests)]
        out = predictor.predict(store, PROJECT, r["tasks"], r["label_config"])
        assert len(out["results"]) == TASKS_PER_REQUEST and all(x["result"] for x in out["results"])

    def timed(fn: Callable[[int], None], budget: float) -> list[float]:
        for i in range(5):  # warm-up: imports, thread pools, the cache's first load
            fn(i)
        times, start, i = [], time.perf_counter(), 0
        while time.perf_counter() - start < budget or len(times) < 20:
            t = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t) * 1000)
            i += 1
        return times

    # the same model step for the default model plugin (cnn, 32x32 RGB; one quick epoch on random images:
    # the weights do not matter for timing), as project 2 of a second cache
    from plugins.models import build_model
    from plugins.models.artifact import save_artifact

    cnn = build_model("cnn", 10, image_size=32, channels=3, train={"epochs": 1, "min_epoch_items": 1})
    rng = np.random.default_rng(0)
    cnn.fit(rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.arange(20) % 10)
    cnn_path = Path(settings.model_dir) / "project-2" / "v1.pt"
    cnn_path.parent.mkdir(parents=True, exist_ok=True)
    save_artifact(cnn_path, cnn, label_map=[str(d) for d in range(10)], metrics={})
    cnn_x = [rng.integers(0, 256, (TASKS_PER_REQUEST, 32, 32, 3), dtype=np.uint8) for _ in range(8)]
    cnn_cache = ModelCache(settings.model_dir)

    def naive_cnn(i: int) -> None:
        load_artifact(cnn_path).model.predict_proba(cnn_x[i % len(cnn_x)])

    def our_cnn(i: int) -> None:
        cnn_cache.get(2, "v1").model.predict_proba(cnn_x[i % len(cnn_x)])

    out = {"cnn_bytes": {"n": cnn_path.stat().st_size}}
    for name, fn in (("naive model", naive_model), ("our model", our_model), ("naive cnn", naive_cnn),
                     ("our cnn", our_cnn), ("naive request", naive_request), ("our request", our_request)):
        times = timed(fn, seconds)
        out[name] = {"n": len(times), "p50": pct(times, 50), "mean": float(np.mean(times)), "p99": pct(times, 99)}
    fetcher.close()
    return out


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, stops: Stops, workdir: Path) -> int:
    from redis import Redis

    from core.config import Settings
    from core.project_settings import ProjectSettings
    from core.store import ProjectStore
    from plugins.models import build_model
    from plugins.models.artifact import save_artifact

    logs = workdir / "logs"
    model_dir = workdir / "models"
    say(f"workdir {workdir}")

    # images: the first N_SERVED shuffled digits as PNG files; the rest (preprocessed as the worker does) train
    data = prepare_digits(workdir / "images", N_SERVED, seed=0)
    # in a child process of its own (own GIL: the load's client threads would slow it down otherwise)
    images = ImageServer(workdir / "images", in_process=False, log_path=logs / "images.log")
    stops.add("the image server", images.stop)
    images.start()
    image_host = images.host
    urls = images.urls(data.files)

    redis_port = free_port()
    (workdir / "redis").mkdir(parents=True, exist_ok=True)
    redis_proc = redis_process(workdir / "redis", redis_port)
    redis_proc.log_path = logs / "redis.log"
    stops.add("redis-server", redis_proc.stop)
    redis_proc.start()
    wait_for_redis(redis_proc, redis_port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis = Redis.from_url(redis_url)
    stops.add("the Redis client", redis.close)
    say(f"redis-server pid {redis_proc.pid} on port {redis_port}; image server pid {images.pid} at {image_host}")

    # the model: logistic regression on the digits not served, registered as project 1's v1
    fast = ProjectSettings(**FAST_SETTINGS)
    model = build_model(fast.model.name, 10, **fast.model.params)
    model.fit(data.test_x, data.test_y)
    shutil.rmtree(model_dir, ignore_errors=True)
    artifact = model_dir / f"project-{PROJECT}" / "v1.pt"
    artifact.parent.mkdir(parents=True)
    save_artifact(artifact, model, label_map=[str(d) for d in range(10)], metrics={})
    store = ProjectStore(redis, PROJECT)
    store.set_settings(fast)
    store.add_version({"version": "v1", "path": str(artifact), "labeled": len(data.test_y), "created_at": time.time()})
    say(f"model v1 trained on {len(data.test_y)} digits, saved to {artifact} ({artifact.stat().st_size} bytes)")

    secret = secrets.token_hex(16)
    env = lsal_env({"REDIS_URL": redis_url, "MODEL_DIR": str(model_dir), "LSAL_IMAGE_HOSTS": image_host,
                    "LSAL_SECRET": secret, "LSAL_RECONCILE_S": "0", "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    backend = ManagedProcess("lsal serve", lsal_command("serve", "--host", "127.0.0.1", "--port", str(port),
                                                        "--log-level", "warning"), logs / "backend.log", env,
                             cwd=REPO, inherit_env=False)
    stops.add("lsal serve", backend.stop)
    backend.start()
    backend.wait_http(f"{url}/health", timeout=180)
    sampler = RssSampler(backend.pid)
    rss_idle = sampler.rss_mib()
    say(f"lsal serve pid {backend.pid} at {url}; RSS {rss_idle:.0f} MiB before any /predict")

    bodies = request_bodies(urls)

    # -- 1. in-process reference ----------------------------------------------------------------------
    settings = Settings(redis_url=redis_url, model_dir=model_dir, image_hosts=[image_host],
                        label_studio_url="http://127.0.0.1:9", reconcile_s=0, secret=None,
                        label_studio_api_key=None, basic_auth_user=None, basic_auth_pass=None)
    say(f"reference: naive vs service path in this process, {args.ref_seconds:g} s per side")
    ref = reference(settings, redis, artifact, bodies, args.ref_seconds)

    # -- 2. load --------------------------------------------------------------------------------------
    say(f"load: {args.clients} clients x {TASKS_PER_REQUEST} tasks per request for {args.seconds:g} s")
    failures: list[str] = []
    result = load(url, bodies, args.clients, args.seconds)
    loads_after_load = model_loads(url)

    # -- 3. soak --------------------------------------------------------------------------------------
    soak = None
    if args.soak_seconds > 0:
        say(f"soak: the same load for {args.soak_seconds:g} s, RSS sampled every second")
        sampler.start()
        stops.add("the RSS sampler", sampler.stop)
        soak = load(url, bodies, args.clients, args.soak_seconds)
        sampler.stop()
    loads_end = model_loads(url)
    if not backend.running:
        raise BenchError(f"lsal serve exited; log {backend.log_path}:\n{backend.log_tail()}")

    # -- report ---------------------------------------------------------------------------------------
    for name, r in (("load", result), ("soak", soak)):
        if r is not None and r.errors:
            failures.append(f"{name}: {len(r.errors)} of {r.requests} requests failed, e.g. {r.errors[0]}")
    if loads_after_load != 1 or loads_end != 1:
        failures.append(f"lsal_model_loads_total was {loads_after_load:g} after the load and {loads_end:g} at the end "
                        "(expected 1: the model is read from disk once)")

    print()
    print(f"/predict: {TASKS_PER_REQUEST} tasks per request (32x32 PNG digits fetched over HTTP from 127.0.0.1, "
          "decoded to 8x8 grayscale), logistic model v1, one uvicorn process")
    print()
    rows = [load_row(f"load {args.seconds:g} s", result, args.clients)]
    if soak is not None:
        rows.append(load_row(f"soak {args.soak_seconds:g} s", soak, args.clients))
        minute = min(60.0, args.soak_seconds / 3)
        first = [l * 1000 for l, d in zip(soak.latencies_s, soak.done_at) if d <= minute]
        last = [l * 1000 for l, d in zip(soak.latencies_s, soak.done_at) if d >= soak.seconds - minute]
    print(table(["phase", "clients", "requests", "req/s", "tasks/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
                 "errors"], rows))
    print()
    print("Reference, in-process, one request at a time (ms per 8-task request):")
    print()
    ref_rows = []
    for what, naive, ours, note in (
            ("model step, served logistic model (8 decoded 8x8 images)", "naive model", "our model",
             "naive: load_artifact(v1.pt) + predict_proba; ours: ModelCache.get + predict_proba"),
            (f"model step, default cnn (32x32 RGB, {ref['cnn_bytes']['n'] / 2**20:.2f} MiB artifact; not served here)",
             "naive cnn", "our cnn", "the same two sides for the cnn plugin's artifact"),
            ("whole request", "naive request", "our request",
             ("naive: fetch + decode 8 images, load_artifact + predict_proba; ours: Predictor.predict (Redis state "
              "+ ranks, fetch + decode, cached model, result JSON)"))):
        n, o = ref[naive], ref[ours]
        ref_rows.append([what, f"{n['p50']:.2f} / {n['mean']:.2f}", f"{o['p50']:.2f} / {o['mean']:.2f}",
                         f"{n['p50'] / o['p50']:.1f}x / {n['mean'] / o['mean']:.1f}x", note])
    print(table(["path", "naive p50 / mean ms", "ours p50 / mean ms", "naive / ours (p50 / mean)",
                 "what each side does"], ref_rows))
    print()
    if soak is not None and sampler.samples:
        t = np.asarray([s[0] for s in sampler.samples])
        mib = np.asarray([s[1] for s in sampler.samples])
        warm = t >= 0.2 * t[-1]
        after_warm = float(np.median(mib[warm][:10]))
        end = float(np.median(mib[-10:]))
        slope = float(np.polyfit(t[warm] / 60.0, mib[warm], 1)[0]) if warm.sum() >= 3 else float("nan")
        growth = end - after_warm
        flat = growth < args.max_growth_mib
        if not flat:
            failures.append(f"RSS grew {growth:.1f} MiB over the soak (limit {args.max_growth_mib:g} MiB)")
        print("Backend RSS during the soak (MiB, psutil, every second):")
        print()
        print(table(["idle (before any /predict)", "soak start", "after warm-up (20%)", "end", "max",
                     "slope of last 80% (MiB/min)", "growth after warm-up", "flat", "model loads"],
                    [[f"{rss_idle:.1f}", f"{mib[0]:.1f}", f"{after_warm:.1f}", f"{end:.1f}", f"{mib.max():.1f}",
                      f"{slope:+.3f}", f"{growth:+.1f}", "yes" if flat else "NO",
                      f"{loads_end:g}"]]))
        print()
        print(f"- soak latency, first vs last {minute:.0f} s: p50 {pct(first, 50):.1f} -> {pct(last, 50):.1f} ms, "
              f"p99 {pct(first, 99):.1f} -> {pct(last, 99):.1f} ms ({len(sampler.samples)} RSS samples)")
    print(f"- lsal_model_loads_total: {loads_after_load:g} after the load, {loads_end:g} at the end")
    print()
    if failures:
        print("CHECKS FAILED:")
        for f in failures:
            print(f"  - {f}")
        print(f"logs: {logs}")
        return 1
    print("all checks passed: every request 200 with 8 predictions; model read from disk once"
          + ("; RSS flat over the soak" if soak is not None else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--seconds", type=float, default=30.0, help="load phase")
    parser.add_argument("--soak-seconds", type=float, default=300.0, help="soak phase (0: none)")
    parser.add_argument("--ref-seconds", type=float, default=5.0, help="in-process reference, per side")
    parser.add_argument("--max-growth-mib", type=float, default=20.0, help="RSS growth allowed over the soak")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep data and logs here (default: a temporary dir, removed when all checks pass)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.soak_seconds < 0 or args.ref_seconds <= 0:
        parser.error("--clients >= 1, --seconds > 0, --soak-seconds >= 0, --ref-seconds > 0")
    return run_main(run, args, (args.workdir or Path(tempfile.mkdtemp(prefix="lsal-predict-"))).resolve())


if __name__ == "__main__":
    sys.exit(main())
