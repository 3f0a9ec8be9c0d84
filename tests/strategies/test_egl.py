"""egl against autograd: the expected norm of the last layer's cross-entropy gradient, label by label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plugins.strategies import Input, PoolInputs, build_strategy


def _autograd_egl(layer: torch.nn.Linear, h: torch.Tensor, include_bias: bool) -> np.ndarray:
    """sum_y p_y ||d CE(layer(h_i), y) / d(W, b)||, one backward pass per item and label."""
    probs = torch.softmax(layer(h), dim=1).detach()
    scores = []
    for i in range(h.shape[0]):
        total = 0.0
        for y in range(probs.shape[1]):
            layer.zero_grad()
            F.cross_entropy(layer(h[i:i + 1]), torch.tensor([y])).backward()
            sq = layer.weight.grad.pow(2).sum() + (layer.bias.grad.pow(2).sum() if include_bias else 0.0)
            total += float(probs[i, y]) * float(sq.sqrt())
        scores.append(total)
    return np.array(scores)


def _linear_pool(n: int, d: int, c: int, seed: int) -> tuple[torch.nn.Linear, torch.Tensor, PoolInputs]:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(d, c).double()
    with torch.no_grad():
        layer.weight.mul_(3.0)
    h = torch.randn(n, d, dtype=torch.float64) * torch.rand(n, 1, dtype=torch.float64) * 2
    probs = torch.softmax(layer(h), dim=1).detach()
    return layer, h, PoolInputs(probs=probs.numpy(), embeddings=h.numpy())


@pytest.mark.parametrize("include_bias", [True, False])
@pytest.mark.parametrize(("n", "d", "c", "seed"), [(15, 5, 4, 0), (10, 3, 2, 1), (8, 6, 7, 2)])
def test_scores_match_autograd(include_bias, n, d, c, seed) -> None:
    layer, h, pool = _linear_pool(n, d, c, seed)
    expected = _autograd_egl(layer, h, include_bias)
    ranking = build_strategy("egl", dtype="float64", include_bias=include_bias).rank(pool)
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ranking.order, np.argsort(-expected, kind="stable"))


def test_top_batch_beats_random_on_expected_gradient_length() -> None:
    layer, h, pool = _linear_pool(80, 6, 5, seed=3)
    true_egl = _autograd_egl(layer, h, include_bias=True)
    k = 10
    picked = true_egl[build_strategy("egl").rank(pool).top(k)].sum()
    random_sums = [true_egl[build_strategy("random", seed=s).rank(pool).top(k)].sum() for s in range(20)]
    assert picked > max(random_sums)
    assert np.isclose(picked, np.sort(true_egl)[-k:].sum())


simplex_rows = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(2, 6)),
                      elements=st.floats(0.0, 1.0)).filter(lambda a: (a.sum(axis=1) > 1e-3).all()).map(
    lambda a: a / a.sum(axis=1, keepdims=True))


@settings(max_examples=40, deadline=None)
@given(probs=simplex_rows, t=st.floats(0.0, 1.0))
def test_flatter_predictions_come_first(probs, t) -> None:
    """Mixing a prediction towards uniform never lowers its score, and uniform scores highest."""
    n, c = probs.shape
    flatter = (1 - t) * probs + t / c
    uniform = np.full((1, c), 1.0 / c)
    stacked = np.concatenate([probs, flatter, uniform])
    pool = PoolInputs(probs=stacked, embeddings=np.ones((2 * n + 1, 3)))
    scores = build_strategy("egl", dtype="float64").rank(pool).scores
    assert (scores[n:2 * n] >= scores[:n] - 1e-12).all()
    assert (scores <= scores[-1] + 1e-12).all()


@settings(max_examples=40, deadline=None)
@given(norms=arrays(np.float64, st.integers(1, 20), elements=st.integers(0, 1000).map(lambda k: k / 10)),
       include_bias=st.booleans())
def test_larger_embeddings_come_first(norms, include_bias) -> None:
    """Same prediction, embeddings of different lengths: the order is by length (ties in pool order)."""
    n, p = len(norms), np.array([0.2, 0.5, 0.3])
    direction = np.array([0.6, 0.0, 0.8])
    pool = PoolInputs(probs=np.tile(p, (n, 1)), embeddings=norms[:, None] * direction)
    ranking = build_strategy("egl", dtype="float64", include_bias=include_bias).rank(pool)
    residual = sum(p[y] * np.linalg.norm(p - np.eye(3)[y]) for y in range(3))
    np.testing.assert_allclose(ranking.scores, residual * np.sqrt(norms**2 + include_bias), rtol=1e-12)
    assert (np.diff(norms[ranking.order]) <= 0).all()


def test_degenerate_pools_give_zero_not_nan() -> None:
    one_class = build_strategy("egl").rank(PoolInputs(probs=np.ones((4, 1)), embeddings=np.random.rand(4, 3)))
    np.testing.assert_array_equal(one_class.scores, np.zeros(4))
    zero_emb = build_strategy("egl", include_bias=False).rank(
        PoolInputs(probs=np.full((3, 2), 0.5), embeddings=np.zeros((3, 4))))
    np.testing.assert_array_equal(zero_emb.scores, np.zeros(3))


def test_needs_probabilities_and_embeddings() -> None:
    assert build_strategy("egl").required_inputs() == {Input.PROBS, Input.EMBEDDINGS}
