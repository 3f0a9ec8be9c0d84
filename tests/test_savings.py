"""Savings against random and its bootstrap interval, against an enumeration of every resample."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from plugins.loop import RoundResult
from plugins.savings import bounded_savings, labels_to_reach, savings, savings_interval
from plugins.simulation import labels_to_target, summary_markdown

LABELS = np.arange(20, 170, 10)


def _curves(rng: np.random.Generator, seeds: int, start: float, slope: float) -> np.ndarray:
    """seeds x rounds noisy rising accuracy curves."""
    base = np.minimum(start + slope * np.arange(len(LABELS)), 0.99)
    return np.clip(base + rng.normal(0, 0.02, size=(seeds, len(LABELS))), 0, 1)


def _first_reach(labels, curve, target) -> float:
    for n, a in zip(labels, curve):
        if a >= target:
            return float(n)
    return math.inf


def _slow_bounded_savings(acc, base_acc, target) -> float:
    mean = [sum(row[j] for row in acc) / len(acc) for j in range(len(LABELS))]
    base_mean = [sum(row[j] for row in base_acc) / len(base_acc) for j in range(len(LABELS))]
    mine, base = _first_reach(LABELS, mean, target), _first_reach(LABELS, base_mean, target)
    if mine == math.inf:
        return -math.inf
    return 1 - mine / (base if base != math.inf else LABELS[-1] + 10)


def _exact_quantile(values: list[float], q: float) -> float:
    """Inverted-CDF quantile of equally likely values: the smallest v with P(X <= v) >= q."""
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def test_paired_interval_matches_the_enumerated_bootstrap() -> None:
    rng = np.random.default_rng(0)
    acc, base = _curves(rng, 3, 0.6, 0.03), _curves(rng, 3, 0.55, 0.025)
    exact = [_slow_bounded_savings(acc[list(rows)], base[list(rows)], 0.85)
             for rows in itertools.product(range(3), repeat=3)]  # all 27 paired resamples, equally likely
    interval = savings_interval(LABELS, acc, [0, 1, 2], LABELS, base, [0, 1, 2], 0.85, resamples=20_000)
    assert interval.paired
    assert interval.low == pytest.approx(_exact_quantile(exact, 0.05))
    assert interval.high == pytest.approx(_exact_quantile(exact, 0.95))
    assert interval.low < interval.high  # the noise is real: not a point


def test_baseline_rows_are_paired_by_seed_not_by_position() -> None:
    rng = np.random.default_rng(1)
    acc = _curves(rng, 4, 0.6, 0.03)
    same = savings_interval(LABELS, acc, [3, 1, 0, 2], LABELS, acc[[2, 1, 3, 0]], [0, 1, 2, 3], 0.85)
    assert same.paired and same.low == same.high == 0.0  # each seed against its own copy


def test_unpaired_seeds_are_resampled_independently() -> None:
    rng = np.random.default_rng(2)
    acc = _curves(rng, 5, 0.6, 0.03)
    interval = savings_interval(LABELS, acc, [0, 1, 2, 3, 4], LABELS, acc, [5, 6, 7, 8, 9], 0.85)
    assert not interval.paired
    assert interval.low < 0 < interval.high  # the same curves, but drawn apart


def test_a_clearly_better_strategy_has_an_interval_above_zero() -> None:
    rng = np.random.default_rng(3)
    acc, base = _curves(rng, 5, 0.7, 0.04), _curves(rng, 5, 0.5, 0.03)
    point = savings(labels_to_reach(LABELS, acc.mean(axis=0), 0.85),
                    labels_to_reach(LABELS, base.mean(axis=0), 0.85))
    interval = savings_interval(LABELS, acc, list(range(5)), LABELS, base, list(range(5)), 0.85)
    assert 0 < interval.low <= point <= interval.high
    assert interval == savings_interval(LABELS, acc, list(range(5)), LABELS, base, list(range(5)), 0.85)


def test_curves_short_of_the_target_count_against_the_strategy() -> None:
    low, high = np.full(len(LABELS), 0.5), np.linspace(0.5, 0.95, len(LABELS))
    assert labels_to_reach(LABELS, low, 0.9) == math.inf
    assert bounded_savings(LABELS, low, LABELS, high, 0.9) == -math.inf
    mine = labels_to_reach(LABELS, high, 0.9)
    assert bounded_savings(LABELS, high, LABELS, low, 0.9) == 1 - mine / (LABELS[-1] + 10)
    assert math.isnan(savings(mine, labels_to_reach(LABELS, low, 0.9)))


@pytest.mark.parametrize("kwargs", [{"level": 1.0}, {"level": 0.0}, {"resamples": 0}])
def test_bad_arguments_are_refused(kwargs) -> None:
    acc = np.full((2, len(LABELS)), 0.9)
    with pytest.raises(ValueError):
        savings_interval(LABELS, acc, [0, 1], LABELS, acc, [0, 1], 0.85, **kwargs)
    with pytest.raises(ValueError):
        savings_interval(LABELS, acc, [0], LABELS, acc, [0, 1], 0.85)


def test_the_summary_table_shows_the_interval() -> None:
    rng = np.random.default_rng(4)
    curves = {"random": _curves(rng, 4, 0.5, 0.03), "badge": _curves(rng, 4, 0.7, 0.04)}
    results = [RoundResult(name, seed, r, int(n), float(acc[seed, r]), 0.0, 0.0, 0.0)
               for name, acc in curves.items() for seed in range(4) for r, n in enumerate(LABELS)]
    rows = {row["strategy"]: row for row in labels_to_target(results, 0.85)}
    badge = rows["badge"]
    assert badge["savings_paired"] and 0 < badge["savings_low"] <= badge["savings_vs_random"]
    assert badge["savings_vs_random"] <= badge["savings_high"]
    assert math.isnan(rows["random"]["savings_low"]) and rows["random"]["savings_vs_random"] == 0.0
    table = summary_markdown(list(rows.values()), 0.85, int(LABELS[-1]))
    assert f"({badge['savings_low']:+.0%} to {badge['savings_high']:+.0%})" in table
