"""Benchmark: the acquisition engine against naive references, measured in the same run.

Each case runs in a fresh subprocess; peak memory is the process's high-water mark (VmHWM) above the
resident size after the inputs were built, so it counts what the method itself allocates.

    python bench/strategies.py            # the sizes of docs/performance.md
    python bench/strategies.py --quick    # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ----------------------------------------------------------------------------------------- measurement
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5" resets VmHWM to the current RSS (Linux)
        fh.write("5")


def _child(case: str, side: str, size: dict, queue: mp.Queue) -> None:
    try:
        import plugins.strategies  # noqa: F401  (imports and torch start-up are not part of the measure)
        import sklearn.cluster  # noqa: F401
        import sklearn.metrics  # noqa: F401

        build, run = CASES[case][side]
        run(build(**_tiny(size)))  # warm-up: thread pools, kernels and allocator start-up are not measured
        data = build(**size)
        _reset_peak()
        base = _rss_kib("VmRSS")
        started = time.perf_counter()
        run(data)
        seconds = time.perf_counter() - started
        queue.put((seconds, max(0, _rss_kib("VmHWM") - base) / 1024))
    except Exception as exc:  # report, do not hang the parent
        queue.put((float("nan"), float("nan"), repr(exc)))


def _tiny(size: dict) -> dict:
    """The same case at a small pool size, for a warm-up call."""
    return {**size, "n": min(size["n"], 500), **({"labeled": min(size["labeled"], 50)} if "labeled" in size else {})}


def measure(case: str, side: str, size: dict) -> tuple[float, float]:
    """(seconds, peak MiB above the inputs) of one case side, in a fresh process."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(case, side, size, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if len(result) == 3:
        raise RuntimeError(f"{case}/{side} failed: {result[2]}")
    return result


# ------------------------------------------------------------------------------------------ inputs
def _probs(n: int, c: int, rng: np.random.Generator) -> np.ndarray:
    z = rng.normal(size=(n, c)).astype(np.float32) * 2
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _samples(n: int, k: int, c: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.normal(size=(n, 1, c)).astype(np.float32) * 2
    z = base + rng.normal(size=(n, k, c)).astype(np.float32)
    z -= z.max(axis=2, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=2, keepdims=True)


def build_badge(n: int, d: int, c: int, batch: int) -> dict:
    rng = np.random.default_rng(0)
    return {"probs": _probs(n, c, rng), "emb": rng.normal(size=(n, d)).astype(np.float32), "batch": batch}


def build_uncertainty(n: int, k: int, c: int) -> dict:
    rng = np.random.default_rng(0)
    return {"probs": _probs(n, c, rng), "samples": _samples(n, k, c, rng)}


def build_batchbald(n: int, k: int, c: int, batch: int) -> dict:
    return {"samples": _samples(n, k, c, np.random.default_rng(0)), "batch": batch}


def build_coreset(n: int, labeled: int, d: int, batch: int) -> dict:
    rng = np.random.default_rng(0)
    return {"emb": rng.normal(size=(n, d)).astype(np.float32),
            "lab": rng.normal(size=(labeled, d)).astype(np.float32), "batch": batch}


# ------------------------------------------------------------------------------------------ ours
def ours_badge(data: dict) -> None:
    from plugins.strategies import PoolInputs, build_strategy

    build_strategy("badge", batch_size=data["batch"], device="cpu").rank(
        PoolInputs(probs=data["probs"], embeddings=data["emb"]))


def ours_entropy(data: dict) -> None:
    from plugins.strategies import PoolInputs, build_strategy

    build_strategy("entropy", device="cpu").rank(PoolInputs(probs=data["probs"]))


def ours_bald(data: dict) -> None:
    from plugins.strategies import PoolInputs, build_strategy

    build_strategy("bald", device="cpu").rank(PoolInputs(samples=data["samples"]))


def ours_batchbald(data: dict) -> None:
    from plugins.strategies import PoolInputs, build_strategy

    build_strategy("batchbald", batch_size=data["batch"], device="cpu").rank(PoolInputs(samples=data["samples"]))


def ours_coreset(data: dict) -> None:
    from plugins.strategies import PoolInputs, build_strategy

    build_strategy("coreset", batch_size=data["batch"], device="cpu").rank(
        PoolInputs(embeddings=data["emb"], labeled_embeddings=data["lab"]))


# ------------------------------------------------------------------------------------------ naive
def naive_badge(data: dict) -> None:
    """Materialise the N x (C*D) gradient embeddings, then scikit-learn's k-means++ seeding."""
    from sklearn.cluster import kmeans_plusplus

    p = data["probs"]
    a = p.copy()
    a[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    grads = (a[:, :, None] * data["emb"][:, None, :]).reshape(len(p), -1)
    kmeans_plusplus(grads, n_clusters=data["batch"], random_state=0, n_local_trials=1)


def naive_entropy(data: dict) -> None:
    """The seed document's numpy code."""
    p = data["probs"]
    np.argsort(-(-np.sum(p * np.log(p + 1e-8), axis=1)))


def naive_bald(data: dict) -> None:
    """The seed document's formula in numpy on (N, K, C)."""
    s = data["samples"]
    mean = s.mean(axis=1)
    predictive = -(mean * np.log(mean + 1e-10)).sum(axis=1)
    expected = (-(s * np.log(s + 1e-10)).sum(axis=2)).mean(axis=1)
    np.argsort(-(predictive - expected))


def naive_batchbald(data: dict) -> None:
    """Greedy BatchBALD with a Python loop over pool items: the same estimator as the engine (exact joint
    while C^b <= 4096, then 2,000 sampled label configurations), numpy, one candidate at a time."""
    s = data["samples"].astype(np.float64)
    n, k, c = s.shape
    rng = np.random.default_rng(0)
    cond = (-(s * np.log(s + 1e-300)).sum(axis=2)).mean(axis=1)
    chosen: list[int] = []
    for size in range(1, data["batch"] + 1):
        if size == 1 or c**size <= 4096:
            prod = np.ones((k, 1))
            for i in chosen:
                prod = (prod[:, :, None] * s[i][:, None, :]).reshape(k, -1)
            mass = prod.mean(axis=0)
            weights = prod / prod.sum(axis=0)
            h_chosen = -(mass * np.log(mass + 1e-300)).sum()
        else:
            members = rng.integers(k, size=2000)
            log_q = np.zeros((k, 2000))
            for i in chosen:
                labels = (rng.random((2000, 1)) > np.cumsum(s[i][members], axis=1)).sum(axis=1).clip(max=c - 1)
                log_q += np.log(s[i][:, labels])
            weights = np.exp(log_q - log_q.max(axis=0))
            weights /= weights.sum(axis=0)
            mass = np.full(2000, 1 / 2000)
            top = log_q.max(axis=0)
            h_chosen = -np.mean(top + np.log(np.exp(log_q - top).sum(axis=0)) - np.log(k))
        best, best_score = -1, -np.inf
        for i in range(n):  # the per-item loop the engine vectorises away
            if i in chosen:
                continue
            pred = s[i].T @ weights  # (C, J): p(y_i | configuration j)
            score = h_chosen + (-(pred * np.log(pred + 1e-300)).sum(axis=0)) @ mass - cond[i]
            if score > best_score:
                best, best_score = i, score
        chosen.append(best)


def naive_coreset(data: dict) -> None:
    """k-center greedy over the full (N + L) x (N + L) distance matrix."""
    from sklearn.metrics import pairwise_distances

    x = np.concatenate([data["lab"], data["emb"]])
    dist = pairwise_distances(x, x)
    min_d = dist[: len(data["lab"])].min(axis=0)
    for _ in range(data["batch"]):
        j = int(min_d.argmax())
        min_d = np.minimum(min_d, dist[j])


CASES: dict[str, dict[str, tuple[Callable, Callable]]] = {
    "badge": {"ours": (build_badge, ours_badge), "naive": (build_badge, naive_badge)},
    "entropy": {"ours": (build_uncertainty, ours_entropy), "naive": (build_uncertainty, naive_entropy)},
    "bald": {"ours": (build_uncertainty, ours_bald), "naive": (build_uncertainty, naive_bald)},
    "batchbald": {"ours": (build_batchbald, ours_batchbald), "naive": (build_batchbald, naive_batchbald)},
    "coreset": {"ours": (build_coreset, ours_coreset), "naive": (build_coreset, naive_coreset)},
}


@dataclass(frozen=True)
class Plan:
    """One table row: the sizes for our side, the (possibly capped) sizes for the naive side."""

    case: str
    size: dict
    naive_size: dict
    scale: Callable[[dict, dict], tuple[float, float]]  # (time factor, memory factor) to extrapolate


def _linear(key: str) -> Callable[[dict, dict], tuple[float, float]]:
    return lambda full, capped: (full[key] / capped[key], full[key] / capped[key])


def _quadratic(key: str, extra: str) -> Callable[[dict, dict], tuple[float, float]]:
    def scale(full: dict, capped: dict) -> tuple[float, float]:
        ratio = ((full[key] + full[extra]) / (capped[key] + capped[extra])) ** 2
        return ratio, ratio

    return scale


def plans(quick: bool) -> list[Plan]:
    """The benchmark sizes (the issue's) or small ones for a smoke run."""
    if quick:
        return [
            Plan("badge", dict(n=5000, d=64, c=10, batch=20), dict(n=5000, d=64, c=10, batch=20), _linear("n")),
            Plan("entropy", dict(n=50_000, k=10, c=10), dict(n=50_000, k=10, c=10), _linear("n")),
            Plan("bald", dict(n=50_000, k=10, c=10), dict(n=50_000, k=10, c=10), _linear("n")),
            Plan("batchbald", dict(n=500, k=10, c=5, batch=4), dict(n=500, k=10, c=5, batch=4), _linear("n")),
            Plan("coreset", dict(n=3000, labeled=100, d=64, batch=20),
                 dict(n=3000, labeled=100, d=64, batch=20), _linear("n")),
        ]
    return [
        Plan("badge", dict(n=100_000, d=512, c=10, batch=100), dict(n=20_000, d=512, c=10, batch=100),
             _linear("n")),
        Plan("entropy", dict(n=1_000_000, k=20, c=10), dict(n=1_000_000, k=20, c=10), _linear("n")),
        Plan("bald", dict(n=1_000_000, k=20, c=10), dict(n=1_000_000, k=20, c=10), _linear("n")),
        Plan("batchbald", dict(n=10_000, k=20, c=10, batch=10), dict(n=2_000, k=20, c=10, batch=10),
             _linear("n")),
        Plan("coreset", dict(n=50_000, labeled=1_000, d=512, batch=100),
             dict(n=10_000, labeled=1_000, d=512, batch=100), _quadratic("n", "labeled")),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--only", default="", help="comma-separated cases to run")
    args = parser.parse_args(argv)
    only = {c for c in args.only.split(",") if c}
    header = ("strategy", "pool", "ours s", "ours MiB", "items/s", "naive s", "naive MiB", "speed-up",
              "memory ratio", "naive measured at")
    rows = []
    print(f"torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, cpus: {os.cpu_count()}", flush=True)
    for plan in plans(args.quick):
        if only and plan.case not in only:
            continue
        ours_s, ours_mb = measure(plan.case, "ours", plan.size)
        naive_s, naive_mb = measure(plan.case, "naive", plan.naive_size)
        t_scale, m_scale = plan.scale(plan.size, plan.naive_size)
        extrapolated = plan.size != plan.naive_size
        naive_s, naive_mb = naive_s * t_scale, naive_mb * m_scale
        where = ", ".join(f"{k}={v:,}" for k, v in plan.naive_size.items()) + (" (extrapolated)" if extrapolated else "")
        rows.append((plan.case, f"{plan.size['n']:,}", f"{ours_s:.3f}", f"{ours_mb:.0f}",
                     f"{plan.size['n'] / ours_s:,.0f}", f"{naive_s:.3f}", f"{naive_mb:.0f}",
                     f"{naive_s / ours_s:.1f}x", f"{naive_mb / max(ours_mb, 1.0):.1f}x", where))
        print(" | ".join(rows[-1]), flush=True)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)] if rows else []
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
