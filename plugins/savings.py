"""Label savings against random: labels to reach a target, and a bootstrap interval over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def labels_to_reach(labels: np.ndarray, accuracy: np.ndarray, target: float) -> float:
    """Labels at the first round whose accuracy reaches target (inf if never)."""
    hits = np.flatnonzero(accuracy >= target)
    return float(labels[hits[0]]) if len(hits) else math.inf


def savings(mine: float, base: float) -> float:
    """1 - mine / base for labels to reach a target (from labels_to_reach); NaN where either is inf."""
    return 1 - mine / base if math.isfinite(mine) and math.isfinite(base) else math.nan


def bounded_savings(labels: np.ndarray, curve: np.ndarray, base_labels: np.ndarray, base_curve: np.ndarray,
                    target: float) -> float:
    """savings, pessimistic for the strategy where a curve stops short of the target: -inf if the
    strategy's never reaches it, the baseline's labels taken as one round past its last if it never does."""
    mine = labels_to_reach(labels, curve, target)
    if not math.isfinite(mine):
        return -math.inf
    base = labels_to_reach(base_labels, base_curve, target)
    if not math.isfinite(base):
        step = base_labels[-1] - base_labels[-2] if len(base_labels) > 1 else 1
        base = float(base_labels[-1] + step)
    return 1 - mine / base


@dataclass(frozen=True)
class SavingsInterval:
    """A percentile bootstrap interval of the savings against the baseline."""

    low: float  # -inf when the strategy misses the target in more than (1 - level) / 2 of the resamples
    high: float
    level: float
    paired: bool  # resampled the same seeds for both (they ran the same seeds), else independently
    resamples: int


def savings_interval(labels: np.ndarray, accuracy: np.ndarray, seeds: list[int], base_labels: np.ndarray,
                     base_accuracy: np.ndarray, base_seeds: list[int], target: float, *, level: float = 0.9,
                     resamples: int = 2000, seed: int = 0) -> SavingsInterval:
    """Bootstrap interval of the mean-curve savings: seeds drawn with replacement (accuracy is seeds x
    rounds), the same draw for both sides where they ran the same seeds; curves that stop short of the
    target count against the strategy (see bounded_savings)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1 or len(accuracy) != len(seeds) or len(base_accuracy) != len(base_seeds):
        raise ValueError("need resamples >= 1 and one accuracy row per seed on both sides")
    paired = sorted(seeds) == sorted(base_seeds)
    if paired:  # align the baseline's rows with the strategy's seeds
        base_accuracy = base_accuracy[[list(base_seeds).index(s) for s in seeds]]
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(len(accuracy), size=len(accuracy))
        base_rows = rows if paired else rng.integers(len(base_accuracy), size=len(base_accuracy))
        values[i] = bounded_savings(labels, accuracy[rows].mean(axis=0), base_labels,
                                    base_accuracy[base_rows].mean(axis=0), target)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail], method="inverted_cdf")
    return SavingsInterval(float(low), float(high), level, paired, resamples)
