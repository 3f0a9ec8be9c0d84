"""Shared kernels against materialized, loop-based references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import chisquare

from plugins.strategies._kernels import (
    chunks,
    entropy,
    factorized_sq_dists,
    kcenter_greedy,
    kmeanspp_factorized,
    min_sq_dists,
    outer_sq_norms,
)


def _outer(a: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The materialized (N, C*D) matrix of g_i = a_i (x) h_i."""
    return np.stack([np.outer(a[i], h[i]).ravel() for i in range(len(a))])


@st.composite
def factor_pairs(draw):
    n, c, d = draw(st.integers(1, 12)), draw(st.integers(1, 5)), draw(st.integers(1, 7))
    values = st.floats(-10, 10, allow_nan=False)
    a = draw(arrays(np.float64, (n, c), elements=values))
    h = draw(arrays(np.float64, (n, d), elements=values))
    return a, h


@settings(max_examples=80, deadline=None)
@given(pair=factor_pairs(), data=st.data())
def test_factorized_sq_dists_match_the_materialized_gradients(pair, data) -> None:
    a, h = pair
    idx = data.draw(st.lists(st.integers(0, len(a) - 1), min_size=1, max_size=4))
    g = _outer(a, h)
    expected = np.array([[np.sum((g[i] - g[j]) ** 2) for j in idx] for i in range(len(g))])
    got = factorized_sq_dists(torch.as_tensor(a), torch.as_tensor(h), idx).numpy()
    scale = 1.0 + (g**2).sum(1).max()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10 * scale)
    assert (got >= 0).all()
    np.testing.assert_allclose(outer_sq_norms(torch.as_tensor(a), torch.as_tensor(h)).numpy(),
                               (g**2).sum(1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_duplicates_are_at_distance_exactly_zero(dtype) -> None:
    rng = np.random.default_rng(0)
    a = torch.as_tensor(rng.normal(size=(7, 10)), dtype=dtype)
    h = torch.as_tensor(rng.normal(scale=5.0, size=(7, 512)), dtype=dtype)
    a, h = torch.cat([a, a]), torch.cat([h, h])
    dists = factorized_sq_dists(a, h, list(range(7)))
    assert (torch.diagonal(dists[:7]) == 0).all() and (torch.diagonal(dists[7:]) == 0).all()
    off = dists[:7] + torch.eye(7, dtype=dtype) * 1e30
    assert (off > 0).all(), "distinct rows must stay apart"


def test_kmeanspp_second_pick_follows_d2_sampling() -> None:
    rng = np.random.default_rng(1)
    a, h = torch.as_tensor(rng.normal(size=(6, 3))), torch.as_tensor(rng.normal(size=(6, 4)))
    g = _outer(a.numpy(), h.numpy())
    first = int(np.argmax((g**2).sum(1)))
    weights = ((g - g[first]) ** 2).sum(1)
    trials = 2000
    counts = np.bincount([kmeanspp_factorized(a, h, 2, np.random.default_rng(s))[1] for s in range(trials)],
                         minlength=6)
    assert counts[first] == 0
    mask = weights > 0
    assert chisquare(counts[mask], weights[mask] / weights.sum() * trials).pvalue > 1e-3


def test_kmeanspp_with_no_mass_orders_by_norm() -> None:
    h = torch.tensor([[1.0], [3.0], [2.0], [3.0]])
    a = torch.ones(4, 1)  # all rows lie on one ray: distinct, then duplicates
    assert kmeanspp_factorized(torch.zeros(4, 2), h, 3, np.random.default_rng(0)) == [0, 1, 2]
    picks = kmeanspp_factorized(a, h, 4, np.random.default_rng(0))
    assert picks[0] == 1 and sorted(picks) == [0, 1, 2, 3] and picks[-1] == 3


def test_min_sq_dists_is_the_brute_force_minimum_whatever_the_chunking() -> None:
    rng = np.random.default_rng(2)
    x, centers = rng.normal(size=(2000, 5)), rng.normal(size=(300, 5))
    expected = np.array([min(np.sum((xi - c) ** 2) for c in centers) for xi in x[:50]])
    for memory_mb in (1, 1024):
        got = min_sq_dists(torch.as_tensor(x), torch.as_tensor(centers), memory_mb).numpy()
        np.testing.assert_allclose(got[:50], expected, rtol=1e-9, atol=1e-12)
    assert torch.isinf(min_sq_dists(torch.as_tensor(x), torch.zeros(0, 5, dtype=torch.float64), 1)).all()


def test_kcenter_greedy_is_farthest_first() -> None:
    x = torch.tensor([[0.0], [1.0], [10.0], [4.0], [6.0]])
    picked, min_sq = kcenter_greedy(x, 3, torch.full((5,), float("inf")))
    # mean 4.2 -> item 3 (4.0); farthest from it 10.0; then from {4, 10}: 0.0
    assert picked == [3, 2, 0]
    np.testing.assert_allclose(min_sq.numpy(), [0.0, 1.0, 0.0, 0.0, 4.0])


def test_chunks_cover_the_range_and_entropy_of_uniform() -> None:
    assert [list(range(17))[s] for s in chunks(17, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9],
                                                             [10, 11, 12, 13, 14], [15, 16]]
    assert torch.isclose(entropy(torch.full((4,), 0.25)), torch.tensor(np.log(4.0), dtype=torch.float32))


def _eager_kcenter(x: np.ndarray, k: int, min_sq: np.ndarray) -> list[int]:
    """The textbook traversal: every step updates every row's distance, then takes the first argmax."""
    d = min_sq.copy()
    picked: list[int] = []
    for _ in range(k):
        c = int(np.argmax(np.where(np.isin(np.arange(len(x)), picked), -np.inf, d)))
        picked.append(c)
        d = np.minimum(d, ((x - x[c]) ** 2).sum(axis=1))
    return picked


@pytest.mark.parametrize("duplicates", [False, True])
def test_lazy_kcenter_picks_what_the_eager_traversal_picks(duplicates) -> None:
    rng = np.random.default_rng(3)
    centers = rng.normal(scale=6.0, size=(12, 8))
    x = centers[rng.integers(0, 12, 1500)] + rng.normal(size=(1500, 8))
    if duplicates:
        x[500:900] = x[:400]  # exact copies: many equal distances, ties to the lowest index
    labeled = x[rng.choice(1500, 20, replace=False)] + rng.normal(scale=0.1, size=(20, 8))
    base = ((x[:, None] - labeled[None]) ** 2).sum(axis=2).min(axis=1)
    picked, min_sq = kcenter_greedy(torch.as_tensor(x), 60, torch.as_tensor(base), memory_mb=1)
    assert picked == _eager_kcenter(x, 60, base)
    expected = np.min([base, *[((x - x[c]) ** 2).sum(axis=1) for c in picked]], axis=0)
    np.testing.assert_allclose(min_sq.numpy(), expected, rtol=1e-9, atol=1e-9)
