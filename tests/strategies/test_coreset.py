"""coreset against a slow greedy k-center over the materialized distance matrix, and its 2-approximation."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strategies import PoolInputs, build_strategy


def _dist_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.array([[np.sqrt(np.sum((xi - yj) ** 2)) for yj in y] for xi in x])


def _reference_coreset(x: np.ndarray, labeled: np.ndarray | None, k: int, first: int | None = None):
    """Greedy k-center: add the pool item farthest from labeled + chosen; rest by that distance. Without a
    labeled set it starts at the item nearest the mean; `first` (the strategy's own first pick) is taken
    instead when it ties with that item to 1e-9 (two items are exactly as near the mean when N = 2, and the two
    ways of computing the distance round differently)."""
    n = len(x)
    pool_d = _dist_matrix(x, x)
    to_centers = _dist_matrix(x, labeled).min(axis=1) if labeled is not None and len(labeled) else None
    picked: list[int] = []
    if to_centers is None:
        mean = x.mean(axis=0)
        to_mean = [np.sum((x[i] - mean) ** 2) for i in range(n)]
        nearest = min(range(n), key=lambda i: (to_mean[i], i))
        tied = first is not None and to_mean[first] <= to_mean[nearest] + 1e-9 * (1 + to_mean[nearest])
        picked.append(first if tied else nearest)
        to_centers = pool_d[:, picked[0]].copy()
    while len(picked) < min(k, n):
        free = [i for i in range(n) if i not in picked]
        best = max(free, key=lambda i: (to_centers[i], -i))
        picked.append(best)
        to_centers = np.minimum(to_centers, pool_d[:, best])
    to_centers[picked] = 0.0
    rest = sorted((i for i in range(n) if i not in picked), key=lambda i: (-to_centers[i], i))
    return np.array(picked + rest), to_centers


def _radius(x: np.ndarray, labeled: np.ndarray | None, batch) -> float:
    """Covering radius: max over the pool of the distance to the nearest labeled or batch item."""
    centers = x[list(batch)] if labeled is None else np.concatenate([labeled, x[list(batch)]])
    return float(_dist_matrix(x, centers).min(axis=1).max())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), n_labeled=st.integers(0, 8), d=st.integers(1, 6), k=st.integers(1, 35),
       seed=st.integers(0, 10_000))
def test_selection_and_scores_match_the_reference(n, n_labeled, d, k, seed) -> None:
    rng = np.random.default_rng(seed)
    x, labeled = rng.normal(size=(n, d)), rng.normal(size=(n_labeled, d))
    ranking = build_strategy("coreset", batch_size=k, dtype="float64").rank(
        PoolInputs(embeddings=x, labeled_embeddings=labeled))
    order, scores = _reference_coreset(x, labeled, k, first=int(ranking.order[0]))
    np.testing.assert_array_equal(ranking.order, order)
    np.testing.assert_allclose(ranking.scores, scores, rtol=1e-9, atol=1e-9)


def test_without_labeled_input_starts_near_the_mean(make_pool) -> None:
    pool = make_pool(n=40, d=5, seed=3)
    ranking = build_strategy("coreset", batch_size=6, dtype="float64").rank(
        dataclasses.replace(pool, labeled_embeddings=None))
    order, scores = _reference_coreset(np.asarray(pool.embeddings), None, 6)
    np.testing.assert_array_equal(ranking.order, order)
    np.testing.assert_allclose(ranking.scores, scores, rtol=1e-9, atol=1e-9)
    assert np.isclose(ranking.info["covering_radius"], scores.max())


def test_covering_radius_beats_random_batches(make_pool) -> None:
    for seed in range(3):
        pool = make_pool(n=200, d=8, n_labeled=10, seed=seed)
        x, labeled = np.asarray(pool.embeddings), np.asarray(pool.labeled_embeddings)
        ours = _radius(x, labeled, build_strategy("coreset", batch_size=10).rank(pool).order[:10])
        rng = np.random.default_rng(seed)
        randoms = [_radius(x, labeled, rng.choice(200, 10, replace=False)) for _ in range(10)]
        assert ours < min(randoms)


@pytest.mark.parametrize(("k", "n_labeled", "seed"), [(2, 0, 0), (3, 0, 1), (2, 2, 2), (3, 1, 3), (3, 3, 4)])
def test_within_twice_the_optimal_radius(k, n_labeled, seed) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10, 2)) * rng.uniform(0.2, 3.0, size=(10, 1))
    labeled = rng.normal(size=(n_labeled, 2)) if n_labeled else None
    pool = PoolInputs(embeddings=x, labeled_embeddings=labeled)
    ours = _radius(x, labeled, build_strategy("coreset", batch_size=k, dtype="float64").rank(pool).order[:k])
    optimum = min(_radius(x, labeled, batch) for batch in itertools.combinations(range(10), k))
    assert optimum <= ours <= 2 * optimum + 1e-12


def test_chunking_does_not_change_the_result(make_pool) -> None:
    pool = make_pool(n=3000, d=6, n_labeled=300, seed=7)
    tiny = build_strategy("coreset", batch_size=20, memory_mb=1, dtype="float64").rank(pool)
    large = build_strategy("coreset", batch_size=20, memory_mb=4096, dtype="float64").rank(pool)
    np.testing.assert_array_equal(tiny.order, large.order)
    np.testing.assert_allclose(tiny.scores, large.scores, rtol=1e-12)


@pytest.mark.parametrize("labeled", [True, False])
def test_zero_distances_everywhere(labeled) -> None:
    x = np.ones((12, 4))
    pool = PoolInputs(embeddings=x, labeled_embeddings=np.ones((3, 4)) if labeled else None)
    ranking = build_strategy("coreset", batch_size=5).rank(pool)
    assert np.array_equal(np.sort(ranking.order), np.arange(12))
    assert np.isfinite(ranking.scores).all() and np.allclose(ranking.scores, 0.0, atol=1e-3)
