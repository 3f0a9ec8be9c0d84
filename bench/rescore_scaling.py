"""Benchmark: sharded rescoring of a synthetic 200k-task pool on 1, 2 and 4 real RQ workers.

What runs is the production path of a shard job (`worker.shards.score_shard`: images fetched over HTTP
from an allow-listed host, decoded, resized, the model's inference, the strategy's per-item scores or
inputs, an .npz in the artifact store), in `lsal worker` processes sharing a private Redis. The merge step
(`worker.shards.merge_order`) is timed in this process, and its peak memory for BADGE is measured on
synthetic inputs of 200k and 1M items. Label Studio is not needed: nothing here publishes.

    python bench/rescore_scaling.py                    # 200k tasks, workers 1 2 4, shards of 20k
    python bench/rescore_scaling.py --tasks 20000 --shard 5000 --workers 1 2     # a quick run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import multiprocessing as mp
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis import Redis  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from core.artifact_store import LocalArtifactStore  # noqa: E402
from core.project_settings import ProjectSettings  # noqa: E402
from core.queueing import queue_for  # noqa: E402
from core.store import ProjectStore  # noqa: E402
from plugins.models import build_model  # noqa: E402
from plugins.models.artifact import save_artifact  # noqa: E402
from plugins.strategies import build_strategy  # noqa: E402
from stack.digits import N_DIGITS, write_digits  # noqa: E402
from stack.images import ImageServer  # noqa: E402
from stack.processes import ManagedProcess, free_port, lsal_command, redis_process, wait_for_redis  # noqa: E402
from worker.shards import merge_order, shard_key  # noqa: E402

PROJECT = 1


def make_images(folder: Path, n_unique: int = N_DIGITS) -> list[str]:
    """The bundled digits as 8x8 PNG files (the pool cycles through them: 200k distinct files add nothing)."""
    paths, _ = write_digits(folder, range(min(n_unique, N_DIGITS)), scale=1, name="d{:05d}.png")
    return [p.name for p in paths]


def run_config(workers: int, pool: list[list], args, env: dict, redis: Redis, workdir: Path) -> dict:
    """Enqueue the shards, start `workers` workers, wait; wall time and per-shard timings."""
    queue = queue_for(redis, "lsal")
    queue.empty()
    run = f"w{workers}-{int(time.time())}"
    strategy = build_strategy("bald").config()
    jobs = [queue.enqueue("worker.shards.score_shard", PROJECT, "v1", run, i, pool[s:s + args.shard], strategy,
                          job_timeout=3600, job_id=f"lsal-shard-p{PROJECT}-{run}-{i}")
            for i, s in enumerate(range(0, len(pool), args.shard))]
    procs = [ManagedProcess(f"worker{k}", lsal_command("worker", "--class", "simple", "--burst"),
                            workdir / f"{run}-worker{k}.log", env) for k in range(workers)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.proc.wait()
    wall = time.perf_counter() - started
    for j in jobs:
        j.refresh()
    states = [j.get_status(refresh=False) for j in jobs]
    if any(str(s) != "JobStatus.FINISHED" and s != "finished" for s in states):
        raise SystemExit(f"shard jobs did not all finish: {states}; logs in {workdir}")
    durations = [(j.ended_at - j.started_at).total_seconds() for j in jobs]
    store = LocalArtifactStore(env["MODEL_DIR"])
    t0 = time.perf_counter()
    parts = [dict(np.load(io.BytesIO(store.get(shard_key(PROJECT, run, i))), allow_pickle=False))
             for i in range(len(jobs))]
    task_ids, _, ranking = merge_order(parts, build_strategy("bald"))
    merge_s = time.perf_counter() - t0
    assert len(task_ids) == len(pool) and len(ranking.order) == len(pool)
    store.delete_prefix(f"project-{PROJECT}/shards/{run}")
    return {"workers": workers, "wall_s": wall, "items_per_s": len(pool) / wall, "shards": len(jobs),
            "shard_s_mean": float(np.mean(durations)), "merge_s": merge_s}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _badge_child(n: int, dim: int, classes: int, batch: int, out: mp.Queue) -> None:
    rng = np.random.default_rng(0)
    parts = []
    for s in range(10):
        m = n // 10
        logits = rng.normal(size=(m, classes)).astype(np.float32)
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        parts.append({"task_ids": np.arange(s * m, (s + 1) * m), "probs": probs.astype(np.float32),
                      "embeddings": rng.normal(size=(m, dim)).astype(np.float32)})
    strategy = build_strategy("badge", batch_size=batch)
    with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark to the current RSS
        fh.write("5")
    base = _status_kib("VmRSS")
    t0 = time.perf_counter()
    merge_order(parts, strategy)
    seconds = time.perf_counter() - t0
    out.put({"n": n, "inputs_mib": sum(p["probs"].nbytes + p["embeddings"].nbytes for p in parts) / 2**20,
             "peak_mib": (_status_kib("VmHWM") - base) / 1024, "seconds": seconds})


def badge_merge_memory(n: int, dim: int = 64, classes: int = 10, batch: int = 100) -> dict:
    """Peak memory (RSS high-water above the shards already in memory) and time of the BADGE merge."""
    out: mp.Queue = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_badge_child, args=(n, dim, classes, batch, out))
    child.start()
    result = out.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--shard", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--badge-sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lsal-scaling-"))
    names = make_images(workdir / "img")
    server = ImageServer(workdir / "img").start()
    base = server.base_url
    port = free_port()
    redis_proc = redis_process(workdir, port).start()
    results, merges = [], []
    try:
        wait_for_redis(redis_proc, port)
        redis = Redis(port=port)
        env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "MODEL_DIR": str(workdir / "models"),
               "LABEL_STUDIO_URL": "http://127.0.0.1:9", "LABEL_STUDIO_API_KEY": "unused-no-label-studio-here",
               "LSAL_IMAGE_HOSTS": base.split("//")[1], "OMP_NUM_THREADS": "1"}
        digits = load_digits()
        model = build_model("logistic", 10, committee=5)
        model.fit(np.rint(digits.images[:300] * 255 / 16).astype(np.uint8)[..., None], digits.target[:300])
        path = Path(env["MODEL_DIR"]) / f"project-{PROJECT}" / "v1.pt"
        path.parent.mkdir(parents=True)
        save_artifact(path, model, label_map=[str(d) for d in range(10)], metrics={})
        store = ProjectStore(redis, PROJECT)
        store.set_settings(ProjectSettings(model={"name": "logistic", "params": {"committee": 5}}, image_size=8,
                                           channels=1))
        store.add_version({"version": "v1"})
        pool = [[i + 1, f"{base}/{names[i % len(names)]}"] for i in range(args.tasks)]
        for w in args.workers:
            print(f"rescoring {args.tasks} tasks with {w} worker(s) ...", flush=True)
            results.append(run_config(w, pool, args, env, redis, workdir))
        for n in args.badge_sizes:
            print(f"BADGE merge of {n} items ...", flush=True)
            merges.append(badge_merge_memory(n))
    finally:
        redis_proc.stop()
        server.stop()
    one = results[0]["wall_s"] if results else 1.0
    print(f"\nsharded rescoring, {args.tasks} tasks, shards of {args.shard}, strategy BALD (5-member committee), "
          f"{os.cpu_count()} CPU cores")
    print(f"{'workers':>8} {'wall s':>8} {'items/s':>9} {'speed-up':>9} {'shard s (mean)':>15} {'merge s':>8}")
    for r in results:
        print(f"{r['workers']:>8} {r['wall_s']:>8.1f} {r['items_per_s']:>9.0f} {one / r['wall_s']:>9.2f} "
              f"{r['shard_s_mean']:>15.1f} {r['merge_s']:>8.2f}")
    print("\nBADGE merge (batch 100, D=64, C=10): memory above the shards already loaded (RSS high-water)")
    print(f"{'items':>10} {'inputs MiB':>11} {'peak MiB':>9} {'seconds':>8}")
    for m in merges:
        print(f"{m['n']:>10} {m['inputs_mib']:>11.0f} {m['peak_mib']:>9.0f} {m['seconds']:>8.1f}")
    print(json.dumps({"scaling": results, "badge_merge": merges}))


if __name__ == "__main__":
    main()
