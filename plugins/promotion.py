"""Promotion gate: serve a newly trained version only when it is not worse than the serving one beyond noise.

Both versions score the same held-out items, which neither trained on (the held-out set is stable across
versions: plugins.holdout). The difference of the kind's primary metric (candidate minus serving) gets a
paired bootstrap: the same resample of items for both models, `resamples` times. The candidate is held back
when even the upper end of the one-sided interval at `level` lies below `-margin`, i.e. it is worse beyond
what the held-out set's noise explains; otherwise it is promoted. The first version is compared the same way
with the no-model baseline of its kind (class priors), where the kind has one.

Pure: no I/O of the service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 500
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class GateRule:
    """The gate's settings: the stable held-out fraction, the interval's level, the margin, the resamples."""

    fraction: float = 0.2
    level: float = DEFAULT_LEVEL
    margin: float = 0.0
    resamples: int = DEFAULT_RESAMPLES


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate is promoted, against what, with both figures and the interval of their difference."""

    promote: bool
    reason: str
    metric: str | None = None
    against: str | None = None  # the serving version's name, or "no-model baseline"
    candidate: float | None = None
    serving: float | None = None
    difference: float | None = None  # candidate - serving on the shared items
    upper: float | None = None  # upper end of the one-sided bootstrap interval of the difference
    items: int = 0  # shared held-out items compared on
    level: float = DEFAULT_LEVEL
    margin: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def accuracy(y: Any, probs: Any) -> float:
    """Share of items whose most probable class is their label (the gate resamples it hundreds of times)."""
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(y)))


def class_shares(y_train: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """The no-model baseline of single-label classification: the training labels' class shares, n times."""
    prior = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return np.tile(prior / max(prior.sum(), 1.0), (n, 1))


def _take(values: Any, idx: np.ndarray) -> Any:
    """`values[idx]` for arrays, a list for other sequences (e.g. a kind's detections)."""
    if isinstance(values, np.ndarray):
        return values[idx]
    return [values[i] for i in idx]


def paired_bootstrap(metric: Callable[[Any, Any], float], y: Any, candidate: Any, serving: Any,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, np.ndarray]:
    """(metric(candidate) - metric(serving) on all items, the same difference on `resamples` paired resamples)."""
    n = len(y)
    full = metric(y, candidate) - metric(y, serving)
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples, dtype=np.float64)
    for b in range(resamples):
        idx = rng.integers(0, n, n)
        ys = _take(y, idx)
        diffs[b] = metric(ys, _take(candidate, idx)) - metric(ys, _take(serving, idx))
    return float(full), diffs


def judge(metric_name: str, metric: Callable[[Any, Any], float], y: Any, candidate: Any, serving: Any | None,
          against: str, level: float = DEFAULT_LEVEL, margin: float = 0.0,
          resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Verdict:
    """The gate's verdict for a candidate's outputs against `serving`'s (None: nothing to compare with)."""
    n = len(y)
    if serving is None or n == 0:
        why = "no held-out items to compare on" if n == 0 else f"nothing to compare with ({against})"
        return Verdict(True, f"promoted: {why}", metric_name, against, items=n, level=level, margin=margin)
    full, diffs = paired_bootstrap(metric, y, candidate, serving, resamples, seed)
    cand, serv = float(metric(y, candidate)), float(metric(y, serving))
    diffs = diffs[np.isfinite(diffs)]  # resamples where the metric is undefined (e.g. no true box drawn)
    if not (np.isfinite(cand) and np.isfinite(serv)) or not len(diffs):
        return Verdict(True, f"promoted: {metric_name} is undefined on the {n} held-out items", metric_name,
                       against, items=n, level=level, margin=margin)
    upper = float(np.quantile(diffs, level))
    worse = upper < -margin
    words = (f"{metric_name} {cand:.4f} vs {serv:.4f} of {against} on the same {n} held-out items "
             f"(difference {full:+.4f}; a {level:.0%} paired bootstrap puts it at most {upper:+.4f})")
    reason = (f"held back: worse beyond noise, {words}" if worse else f"promoted: not worse beyond noise, {words}")
    return Verdict(not worse, reason, metric_name, against, cand, serv, full, upper, n, level, margin)
