"""badge against a slow k-means++ on the materialized gradient embeddings, replaying the same draws."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from plugins.strategies import PoolInputs, build_strategy


def _grad_embeddings(probs: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """g_i = (p_i - onehot(argmax p_i)) (x) h_i, materialized as an (N, C*D) matrix."""
    c = probs.shape[1]
    return np.stack([np.outer(p - np.eye(c)[np.argmax(p)], h).ravel() for p, h in zip(probs, emb)])


@pytest.mark.parametrize(("n", "c", "d", "k", "seed"), [
    (40, 4, 6, 7, 0), (60, 3, 5, 20, 1), (25, 6, 3, 25, 2), (30, 2, 8, 1, 3), (12, 5, 4, 40, 4),
])
def test_selection_and_scores_match_the_reference(n, c, d, k, seed, make_pool, kmeanspp_reference) -> None:
    pool = make_pool(n=n, c=c, d=d, seed=seed)
    ranking = build_strategy("badge", batch_size=k, seed=seed, dtype="float64").rank(pool)
    # the strategy draws from its generator with salt 0: default_rng([seed, 0])
    g = _grad_embeddings(pool.probs, pool.embeddings)
    order, norms = kmeanspp_reference(g, k, np.random.default_rng([seed, 0]))
    np.testing.assert_array_equal(ranking.order, order)
    np.testing.assert_allclose(ranking.scores, norms, rtol=1e-10, atol=1e-12)
    assert ranking.info["batch_size"] == min(k, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exact_duplicates_are_covered_before_being_repeated(dtype, make_pool) -> None:
    base = make_pool(n=10, c=3, d=32, seed=5)
    copies = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 5))
    pool = PoolInputs(probs=base.probs[copies], embeddings=base.embeddings[copies])
    for seed in range(5):
        ranking = build_strategy("badge", batch_size=30, seed=seed, dtype=dtype).rank(pool)
        picked = ranking.order[:30]
        assert len(set(picked.tolist())) == 30
        groups = copies[picked[:10]]
        assert len(set(groups.tolist())) == 10, "every distinct gradient is drawn before any duplicate"


def test_one_class_and_zero_embeddings_fall_back_to_pool_order(make_pool) -> None:
    pool = make_pool(n=20, c=1)
    ranking = build_strategy("badge", batch_size=5).rank(pool)
    np.testing.assert_array_equal(ranking.order, np.arange(20))
    assert (ranking.scores == 0).all()
    pool = make_pool(n=20, c=3)
    ranking = build_strategy("badge", batch_size=5).rank(
        dataclasses.replace(pool, embeddings=np.zeros_like(pool.embeddings)))
    np.testing.assert_array_equal(ranking.order, np.arange(20))
    assert np.isfinite(ranking.scores).all()


def _potential(g: np.ndarray, batch: np.ndarray) -> float:
    """k-means potential: sum over the pool of the squared distance to the nearest batch item."""
    return float(sum(min(np.sum((gi - g[j]) ** 2) for j in batch) for gi in g))


def test_lower_kmeans_potential_than_random_batches(make_pool) -> None:
    wins = []
    for seed in range(4):
        pool = make_pool(n=150, c=5, d=12, seed=seed, dropout=0.6)
        g = _grad_embeddings(pool.probs, pool.embeddings)
        ours = _potential(g, build_strategy("badge", batch_size=8, seed=seed).rank(pool).order[:8])
        rng = np.random.default_rng(seed)
        random_mean = np.mean([_potential(g, rng.choice(150, 8, replace=False)) for _ in range(10)])
        wins.append(ours < random_mean)
    assert all(wins)
