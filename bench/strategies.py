"""Benchmark: the acquisition engine against naive references and the peers' own code, in the same run.

Each case side runs in a fresh subprocess pinned to a number of threads (OMP/MKL/OpenBLAS variables,
torch.set_num_threads and threadpoolctl), once with one thread and once with every core; peak memory is the
process's high-water mark (VmHWM) above the resident size after the inputs were built.

The peers are bench-only extras, never runtime dependencies of the engine; a peer that is not installed is
reported as such:

    .venv/bin/pip install scikit-activeml==1.0.1 baal==2.1.0 batchbald-redux==2.0.5 modAL-python==0.4.2.1
    python bench/strategies.py                    # the issue's sizes (docs/performance.md)
    python bench/strategies.py --quick            # small sizes, a smoke run
    python bench/strategies.py --only entropy,bald --threads 1
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _child(case: str, side: str, size: dict, threads: int, queue: mp.Queue) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        import plugins.strategies  # noqa: F401  (imports and torch start-up are not part of the measure)
        import sklearn.cluster  # noqa: F401
        import sklearn.metrics  # noqa: F401
        from threadpoolctl import threadpool_limits

        build, run = CASES[case][side]
        with threadpool_limits(limits=threads):
            run(build(**_tiny(size)))  # warm-up: thread pools, kernels and allocator start-up are not measured
            data = build(**size)
            _reset_peak()
            base = _rss_kib("VmRSS")
            started = time.perf_counter()
            picks = run(data)
            seconds = time.perf_counter() - started
        queue.put((seconds, max(0, _rss_kib("VmHWM") - base) / 1024,
                   None if picks is None else [int(i) for i in picks]))
    except ImportError as exc:
        queue.put((float("nan"), float("nan"), f"not installed ({exc.name})"))
    except Exception as exc:  # report, do not hang the parent
        queue.put((float("nan"), float("nan"), repr(exc)))


@dataclass
class Measure:
    """One side of a case: seconds, peak MiB above the inputs, the picks it returned, or why it has none."""

    seconds: float
    mib: float
    picks: list[int] | None = None
    error: str | None = None


def measure(case: str, side: str, size: dict, threads: int = 1, timeout: float = 300.0) -> Measure:
    """One case side in a fresh process pinned to `threads` threads."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    saved = {v: os.environ.get(v) for v in _THREAD_VARS}
    os.environ.update({v: str(threads) for v in _THREAD_VARS})  # inherited by the spawned child
    try:
        proc = ctx.Process(target=_child, args=(case, side, size, threads, queue))
        proc.start()
    finally:
        for var, value in saved.items():
            os.environ.pop(var, None) if value is None else os.environ.__setitem__(var, value)
    try:
        seconds, mib, extra = queue.get(timeout=timeout)
    except Exception:  # queue.Empty: too slow for this run
        proc.kill()
        proc.join()
        return Measure(float("nan"), float("nan"), error=f"> {timeout:.0f} s (stopped)")
    proc.join()
    if isinstance(extra, str):
        return Measure(float("nan"), float("nan"), error=extra)
    return Measure(seconds, mib, picks=extra)


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
    np.exp(z, out=z)
    z /= z.sum(axis=2, keepdims=True)
    return z


def build_probs(n: int, c: int, top: int) -> dict:
    return {"probs": _probs(n, c, np.random.default_rng(0)), "top": top}


def build_samples(n: int, k: int, c: int, top: int) -> dict:
    return {"samples": _samples(n, k, c, np.random.default_rng(0)), "top": top}


def build_log_samples(n: int, k: int, c: int, top: int) -> dict:
    """batchbald-redux's input convention: log-probabilities (N, K, C), computed before the clock starts."""
    import torch

    return {"log": torch.from_numpy(np.log(_samples(n, k, c, np.random.default_rng(0)))), "top": top}


def build_baal_samples(n: int, k: int, c: int, top: int) -> dict:
    """baal's layout: (N, C, iterations), transposed before the clock starts."""
    s = _samples(n, k, c, np.random.default_rng(0))
    return {"samples": np.ascontiguousarray(s.transpose(0, 2, 1)), "top": top}


def build_badge(n: int, d: int, c: int, batch: int) -> dict:
    rng = np.random.default_rng(0)
    return {"probs": _probs(n, c, rng), "emb": rng.normal(size=(n, d)).astype(np.float32), "batch": batch}


def build_batchbald(n: int, k: int, c: int, batch: int, configs: int) -> dict:
    return {"samples": _samples(n, k, c, np.random.default_rng(0)), "batch": batch, "configs": configs}


def build_coreset(n: int, labeled: int, d: int, batch: int) -> dict:
    rng = np.random.default_rng(0)
    return {"emb": rng.normal(size=(n, d)).astype(np.float32),
            "lab": rng.normal(size=(labeled, d)).astype(np.float32), "batch": batch}


# ------------------------------------------------------------------------------------------ ours
def _ours(name: str, **params):
    def run(data: dict):
        from plugins.strategies import PoolInputs, build_strategy

        pool = {k: data[v] for k, v in (("probs", "probs"), ("samples", "samples"), ("embeddings", "emb"),
                                        ("labeled_embeddings", "lab")) if v in data}
        extra = {"batch_size": data["batch"]} if "batch" in data else {}
        if "configs" in data:  # batchbald at the peers' configuration count and switch to sampling
            c = data["samples"].shape[2]
            extra |= {"num_configs": data["configs"], "exact_limit": c * data["configs"]}
        order = build_strategy(name, device="cpu", **params, **extra).rank(PoolInputs(**pool)).order
        return order[: data.get("top", data.get("batch", 0))]
    return run


def _without_checks(run: Callable) -> Callable:
    """The same call with the value checks (NaN/inf, probabilities) skipped: their cost is the difference."""
    def unchecked(data: dict):
        import plugins.strategies._bayesian as bayesian
        import plugins.strategies._uncertainty as uncertainty
        import plugins.strategies.base as base
        from plugins.strategies._kernels import chunks

        def no_checks(name, x, is_prob, sums_to_one=True, block_bytes=2 * 2**20):
            rows = max(1, block_bytes // max(1, x[0].numel() * x.element_size())) if len(x) else 1
            for sl in chunks(x.shape[0], rows):
                yield sl, x[sl]

        for module in (base, bayesian, uncertainty):
            module.checked_blocks = no_checks
        return run(data)
    return unchecked


# ------------------------------------------------------------------------------------------ peers
def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The k largest scores, in order: argpartition, then a sort of those k only."""
    idx = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
    return idx[np.argsort(-scores[idx], kind="stable")]


def _numpy_score(kind: str, p: np.ndarray) -> np.ndarray:
    if kind == "entropy":
        return -np.sum(p * np.log(p + 1e-8), axis=1)
    if kind == "margin":
        part = np.partition(p, -2, axis=1)
        return 1.0 - (part[:, -1] - part[:, -2])
    return 1.0 - p.max(axis=1)


def naive_numpy_top(kind: str) -> Callable:
    """The seed document's numpy score, then only the top B ordered (argpartition)."""
    return lambda data: _top(_numpy_score(kind, data["probs"]), data["top"])


def naive_torch_top(kind: str) -> Callable:
    """The score in plain torch (full-size temporaries), then torch.topk of B."""
    def run(data: dict):
        import torch

        p = torch.from_numpy(data["probs"])
        if kind == "entropy":
            s = -(p * torch.log(p + 1e-8)).sum(1)
        elif kind == "margin":
            t = p.topk(2, dim=1).values
            s = 1 - (t[:, 0] - t[:, 1])
        else:
            s = 1 - p.max(1).values
        return torch.topk(s, data["top"]).indices.numpy()
    return run


class _Fixed:
    """A fitted 'classifier' whose predict_proba returns the pool's probabilities (for modAL)."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs

    def predict_proba(self, x, **_):
        return self.probs


def modal_top(kind: str) -> Callable:
    """modAL 0.4.2: entropy_sampling / margin_sampling / uncertainty_sampling, n_instances = B."""
    def run(data: dict):
        from modAL import uncertainty

        fn = {"entropy": uncertainty.entropy_sampling, "margin": uncertainty.margin_sampling,
              "least_confidence": uncertainty.uncertainty_sampling}[kind]
        p = data["probs"]
        picked = fn(_Fixed(p), np.zeros((len(p), 1)), n_instances=data["top"])
        return picked[0] if isinstance(picked, tuple) else picked
    return run


def skactiveml_top(kind: str) -> Callable:
    """scikit-activeml 1.0.1: uncertainty_scores (its UncertaintySampling utilities), top B by argpartition."""
    def run(data: dict):
        from skactiveml.pool import uncertainty_scores

        method = {"entropy": "entropy", "margin": "margin_sampling", "least_confidence": "least_confident"}[kind]
        return _top(uncertainty_scores(data["probs"], method=method), data["top"])
    return run


def baal_full(kind: str) -> Callable:
    """baal 2.1.0 heuristics: get_ranks, a full argsort of the whole pool."""
    def run(data: dict):
        from baal.active import heuristics

        h = {"entropy": heuristics.Entropy, "margin": heuristics.Margin,
             "least_confidence": heuristics.Certainty}[kind]()
        ranks = h.get_ranks(data["probs"])
        return (ranks[0] if isinstance(ranks, tuple) else ranks)[: data["top"]]
    return run


def naive_torch_bald(data: dict):
    """The reference of the issue: the BALD formula in plain torch on (N, K, C), then a full argsort."""
    import torch

    s = torch.from_numpy(data["samples"])
    mean = s.mean(dim=1)
    predictive = -(mean * torch.log(mean + 1e-10)).sum(dim=1)
    expected = (-(s * torch.log(s + 1e-10)).sum(dim=2)).mean(dim=1)
    return torch.argsort(predictive - expected, descending=True)[: data["top"]].numpy()


def naive_numpy_bald(data: dict):
    """The seed document's formula in numpy on (N, K, C), then a full argsort."""
    s = data["samples"]
    mean = s.mean(axis=1)
    predictive = -(mean * np.log(mean + 1e-10)).sum(axis=1)
    expected = (-(s * np.log(s + 1e-10)).sum(axis=2)).mean(axis=1)
    return np.argsort(-(predictive - expected))[: data["top"]]


def redux_bald(data: dict):
    """batchbald-redux 2.0.5 get_bald_batch: BALD from log-probabilities, top B (torch.topk)."""
    from batchbald_redux.batchbald import get_bald_batch

    return get_bald_batch(data["log"], data["top"]).indices


def baal_bald(data: dict):
    """baal 2.1.0 BALD heuristic (numpy, xlogy) on (N, C, T), full ranks."""
    from baal.active.heuristics import BALD

    ranks = BALD().get_ranks(data["samples"])
    return (ranks[0] if isinstance(ranks, tuple) else ranks)[: data["top"]]


def naive_badge(data: dict):
    """Materialise the N x (C*D) gradient embeddings, then scikit-learn's k-means++ seeding."""
    from sklearn.cluster import kmeans_plusplus

    p = data["probs"]
    a = p.copy()
    a[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    grads = (a[:, :, None] * data["emb"][:, None, :]).reshape(len(p), -1)
    kmeans_plusplus(grads, n_clusters=data["batch"], random_state=0, n_local_trials=1)


def materialised_badge(data: dict):
    """Our seeding on the materialised N x (C*D) gradients: the largest ||g|| first, then D^2 draws with the
    same generator calls (one rng.random() per draw, cumulative sum, binary search): index-identical."""
    p = data["probs"]
    a = p.copy()
    a[np.arange(len(p)), p.argmax(axis=1)] -= 1.0
    g = (a[:, :, None] * data["emb"][:, None, :]).reshape(len(p), -1)
    rng = np.random.default_rng([0, 0])
    sq = np.einsum("ij,ij->i", g, g)
    picked = [int(np.argmax(sq))]
    min_sq = np.maximum(sq + sq[picked[0]] - 2 * (g @ g[picked[0]]), 0.0)
    min_sq[picked[0]] = 0.0
    while len(picked) < data["batch"]:
        cum = np.cumsum(min_sq, dtype=np.float64)
        c = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        picked.append(min(c, len(p) - 1))
        np.minimum(min_sq, np.maximum(sq + sq[c] - 2 * (g @ g[c]), 0.0), out=min_sq)
        min_sq[c] = 0.0
    return picked


def naive_coreset(data: dict):
    """The textbook numpy code: distances to the labeled set (one GEMM), then an eager greedy that refreshes
    every row's distance after each pick (ties to the lowest index, as np.argmax)."""
    x, lab = data["emb"], data["lab"]
    x_sq = np.einsum("ij,ij->i", x, x)
    l_sq = np.einsum("ij,ij->i", lab, lab)
    min_d = np.full(len(x), np.inf, dtype=np.float32)
    for start in range(0, len(x), 4096):
        block = x_sq[start:start + 4096, None] - 2 * x[start:start + 4096] @ lab.T + l_sq[None, :]
        min_d[start:start + 4096] = np.maximum(block, 0).min(axis=1)
    picked = []
    for _ in range(data["batch"]):
        j = int(np.argmax(min_d))
        picked.append(j)
        np.minimum(min_d, np.maximum(x_sq - 2 * (x @ x[j]) + x_sq[j], 0), out=min_d)
        min_d[j] = -np.inf
    return picked


def skactiveml_coreset(data: dict):
    """scikit-activeml 1.0.1 k_greedy_center on pool + labeled (the labeled rows carry labels)."""
    from skactiveml.pool import k_greedy_center
    from skactiveml.utils import MISSING_LABEL

    x = np.concatenate([data["lab"], data["emb"]])
    y = np.concatenate([np.zeros(len(data["lab"])), np.full(len(data["emb"]), MISSING_LABEL)])
    picked = k_greedy_center(x, y, batch_size=data["batch"], random_state=0)
    picked = picked[0] if isinstance(picked, tuple) else picked
    return [int(i) - len(data["lab"]) for i in picked]


def redux_batchbald(data: dict):
    """batchbald-redux 2.0.5 get_batchbald_batch with num_samples = the configuration count."""
    import torch
    from batchbald_redux.batchbald import get_batchbald_batch

    torch.manual_seed(0)
    log = torch.from_numpy(np.log(data["samples"]))
    return get_batchbald_batch(log, data["batch"], data["configs"]).indices


def skactiveml_batchbald(data: dict):
    """scikit-activeml 1.0.1 batch_bald with n_MC_samples = the configuration count."""
    from skactiveml.pool._bald import batch_bald

    utilities = batch_bald(data["samples"].transpose(1, 0, 2).copy(), data["batch"],
                           n_MC_samples=data["configs"], random_state=0)
    return [int(np.nanargmax(u)) for u in utilities]


def baal_batchbald(data: dict):
    """baal 2.1.0 BatchBALD heuristic with num_draw = the configuration count."""
    from baal.active.heuristics import BatchBALD

    ranks = BatchBALD(num_samples=data["batch"], num_draw=data["configs"]).get_ranks(
        np.ascontiguousarray(data["samples"].transpose(0, 2, 1)))
    return (ranks[0] if isinstance(ranks, tuple) else ranks)[: data["batch"]]


def _uncertainty_case(kind: str) -> dict[str, tuple[Callable, Callable]]:
    return {"ours": (build_probs, _ours(kind)), "ours, no checks": (build_probs, _without_checks(_ours(kind))),
            "naive numpy, top B": (build_probs, naive_numpy_top(kind)),
            "naive torch, top B": (build_probs, naive_torch_top(kind)),
            "modAL, top B": (build_probs, modal_top(kind)),
            "scikit-activeml, top B": (build_probs, skactiveml_top(kind)),
            "baal, full order": (build_probs, baal_full(kind))}


CASES: dict[str, dict[str, tuple[Callable, Callable]]] = {
    "entropy": _uncertainty_case("entropy"),
    "margin": _uncertainty_case("margin"),
    "least_confidence": _uncertainty_case("least_confidence"),
    "bald": {"ours": (build_samples, _ours("bald")),
             "ours, no checks": (build_samples, _without_checks(_ours("bald"))),
             "naive torch, full order": (build_samples, naive_torch_bald),
             "naive numpy, full order": (build_samples, naive_numpy_bald),
             "batchbald-redux, top B": (build_log_samples, redux_bald),
             "baal, full order": (build_baal_samples, baal_bald)},
    "coreset": {"ours": (build_coreset, _ours("coreset")), "naive numpy": (build_coreset, naive_coreset),
                "scikit-activeml": (build_coreset, skactiveml_coreset)},
    "batchbald": {"ours": (build_batchbald, _ours("batchbald")),
                  "batchbald-redux": (build_batchbald, redux_batchbald),
                  "scikit-activeml": (build_batchbald, skactiveml_batchbald),
                  "baal": (build_batchbald, baal_batchbald)},
    "badge": {"ours": (build_badge, _ours("badge")), "materialised, same draws": (build_badge, materialised_badge),
              "naive: sklearn k-means++ on materialised": (build_badge, naive_badge)},
}


@dataclass(frozen=True)
class Plan:
    """One case: our sizes, and for a side that cannot run at them the size it runs at (then extrapolated)."""

    case: str
    label: str
    size: dict
    capped: dict = field(default_factory=dict)  # side -> smaller size
    power: int = 1  # extrapolation: time ~ n ** power
    same_picks: tuple[str, ...] = ()  # sides whose picks must equal ours index for index


def _tiny(size: dict) -> dict:
    """The same case at a small pool size, for a warm-up call."""
    small = {**size, "n": min(size["n"], 500)}
    if "labeled" in size:
        small["labeled"] = min(size["labeled"], 50)
    if "top" in size:
        small["top"] = min(size["top"], 50)
    if "configs" in size:
        small["configs"] = min(size["configs"], 200)
    return small


def plans(quick: bool) -> list[Plan]:
    """The issue's sizes, or small ones for a smoke run."""
    n_unc, n_bald, n_core, n_bb, n_badge = ((50_000, 20_000, 3_000, 200, 5_000) if quick
                                            else (1_000_000, 1_000_000, 50_000, 1_000, 100_000))
    k, configs = (10, 500) if quick else (20, 10_000)
    badge = dict(n=n_badge, d=64 if quick else 512, c=10, batch=20 if quick else 100)
    badge_cap = dict(badge, n=min(n_badge, 20_000))
    return [
        *(Plan(kind, f"{kind} (C=10), whole-pool order; peers top 1,000", dict(n=n_unc, c=10, top=1000))
          for kind in ("entropy", "margin", "least_confidence")),
        Plan("bald", f"bald (T={k}, C=10), whole-pool order", dict(n=n_bald, k=k, c=10, top=1000)),
        Plan("coreset", "coreset (1,000 labeled, D=512, B=100)",
             dict(n=n_core, labeled=100 if quick else 1000, d=64 if quick else 512, batch=20 if quick else 100),
             same_picks=("naive numpy",)),
        Plan("batchbald", f"batchbald (K={k}, C=10, B=10, {configs:,} configurations)",
             dict(n=n_bb, k=k, c=10, batch=10, configs=configs)),
        Plan("badge", f"badge (D={badge['d']}, C=10, B={badge['batch']})", badge,
             capped={"naive: sklearn k-means++ on materialised": badge_cap},
             same_picks=("materialised, same draws",)),
    ]


def _fmt(m: Measure) -> str:
    return m.error if m.error else f"{m.seconds:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--only", default="", help="comma-separated cases to run")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="thread counts to run each side at")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds before a side is stopped")
    args = parser.parse_args(argv)
    only = {c for c in args.only.split(",") if c}
    threads = [int(t) for t in args.threads.split(",") if t]
    print(f"cpus: {os.cpu_count()}, threads: {threads}; no GPU is measured here", flush=True)
    summary, detail = [], []
    for plan in plans(args.quick):
        if only and plan.case not in only:
            continue
        results: dict[str, dict[int, Measure]] = {}
        for side in CASES[plan.case]:
            size = plan.capped.get(side, plan.size)
            for t in threads:
                m = measure(plan.case, side, size, t, args.timeout)
                if size != plan.size and m.error is None:  # extrapolated in N
                    m = Measure(m.seconds * (plan.size["n"] / size["n"]) ** plan.power, m.mib, m.picks)
                results.setdefault(side, {})[t] = m
                note = "" if size == plan.size else f" (at n={size['n']:,}, extrapolated)"
                print(f"{plan.case} | {side} | {t} thread(s) | {_fmt(m)} s{note}", flush=True)
                detail.append((plan.label, side + note, str(t), _fmt(m),
                               "-" if m.error else f"{m.mib:.0f}"))
        ours = results["ours"]
        peers = {s: r for s, r in results.items() if not s.startswith("ours") and s not in plan.same_picks}
        row = [plan.label, f"{plan.size['n']:,}"]
        for t in threads:
            timed = {s: r[t].seconds for s, r in peers.items() if r[t].error is None}
            best = min(timed, key=timed.get) if timed else None
            row += [f"{ours[t].seconds:.3f}", best or "-", f"{timed[best]:.3f}" if best else "-",
                    f"{timed[best] / ours[t].seconds:.1f}x" if best else "-"]
        checks = results.get("ours, no checks")
        row.append(f"{max(0.0, 1 - checks[threads[0]].seconds / ours[threads[0]].seconds):.0%}" if checks else "-")
        agree = []
        for side in plan.same_picks:
            same = results[side][threads[0]].picks == ours[threads[0]].picks
            agree.append(f"{side}: {'identical' if same else 'DIFFERENT'}")
        for side, r in peers.items():
            if r[threads[0]].picks is not None and ours[threads[0]].picks is not None and plan.case == "batchbald":
                mine, theirs = ours[threads[0]].picks, r[threads[0]].picks
                agree.append(f"{side}: first {next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), len(mine))} equal")
        row.append("; ".join(agree) or "-")
        summary.append(row)
    header = ["strategy", "pool"]
    for t in threads:
        header += [f"ours s ({t}T)", f"best peer ({t}T)", f"peer s ({t}T)", f"ratio ({t}T)"]
    header += ["checks share (1T)", "picks"]
    _table(header, summary)
    _table(["case", "side", "threads", "seconds", "peak MiB"], detail)


def _table(header: list[str], rows: list) -> None:
    widths = [max(len(h), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)] if rows else []
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
