"""mc_variance and bald against their formulas, item by item; BALD separates epistemic from aleatoric."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plugins.strategies import PoolInputs, build_strategy

sample_tensors = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 6), st.integers(1, 5)),
                        elements=st.floats(0.0, 1.0)).filter(lambda a: (a.sum(axis=2) > 1e-3).all()).map(
    lambda a: a / a.sum(axis=2, keepdims=True))


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def _reference_variance(item: np.ndarray) -> float:
    k, c = item.shape
    total = 0.0
    for cls in range(c):
        values = [float(item[s, cls]) for s in range(k)]
        mean = sum(values) / k
        total += sum((v - mean) ** 2 for v in values) / k
    return total / c


def _reference_bald(item: np.ndarray) -> float:
    k, c = item.shape
    mean = [sum(float(item[s, cls]) for s in range(k)) / k for cls in range(c)]
    return _entropy(mean) - sum(_entropy([float(x) for x in item[s]]) for s in range(k)) / k


def _scores(name: str, samples: np.ndarray) -> np.ndarray:
    ranking = build_strategy(name, dtype="float64").rank(PoolInputs(samples=samples))
    ordered = ranking.scores[ranking.order]
    assert (np.diff(ordered) <= 1e-12).all(), "the order is the scores, descending"
    return ranking.scores


@settings(max_examples=60, deadline=None)
@given(samples=sample_tensors)
def test_scores_match_the_formula(samples) -> None:
    np.testing.assert_allclose(_scores("mc_variance", samples),
                               [_reference_variance(item) for item in samples], atol=1e-12)
    bald = _scores("bald", samples)
    np.testing.assert_allclose(bald, [max(0.0, _reference_bald(item)) for item in samples], atol=1e-9)
    assert (bald >= 0).all()


@settings(max_examples=30, deadline=None)
@given(samples=sample_tensors)
def test_bald_and_variance_vanish_when_all_samples_agree(samples) -> None:
    agreeing = np.repeat(samples[:, :1], samples.shape[1], axis=1)
    assert np.abs(_scores("bald", agreeing)).max() <= 1e-12
    assert np.abs(_scores("mc_variance", agreeing)).max() <= 1e-12


def _epistemic_aleatoric_pool(n_each: int = 30, k: int = 10, c: int = 5, seed: int = 0) -> np.ndarray:
    """First half: members confident but disagreeing. Second half: members agree on a flat prediction."""
    rng = np.random.default_rng(seed)
    epistemic = np.full((n_each, k, c), 0.05 / (c - 1))
    epistemic[np.arange(n_each)[:, None], np.arange(k)[None], rng.integers(0, c, (n_each, k))] = 0.95
    flat = rng.dirichlet(np.full(c, 50.0), size=n_each)
    aleatoric = np.repeat(flat[:, None], k, axis=1) + rng.normal(scale=1e-3, size=(n_each, k, c))
    aleatoric = np.abs(aleatoric) / np.abs(aleatoric).sum(axis=2, keepdims=True)
    return np.concatenate([epistemic, aleatoric])


def test_bald_and_variance_rank_epistemic_items_first_where_entropy_does_not() -> None:
    samples = _epistemic_aleatoric_pool()
    half = len(samples) // 2
    for name in ("bald", "mc_variance"):
        order = build_strategy(name).rank(PoolInputs(samples=samples)).order
        assert set(order[:half]) == set(range(half)), name
    entropy_order = build_strategy("entropy").rank(PoolInputs(probs=samples.mean(axis=1))).order
    assert len(set(entropy_order[:half]) & set(range(half))) < half / 2


def test_seed_example_values() -> None:
    # two members, certain and opposite: one bit of information about the parameters, variance 1/4
    samples = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    assert np.isclose(build_strategy("bald").rank(PoolInputs(samples=samples)).scores[0], math.log(2))
    assert np.isclose(build_strategy("mc_variance").rank(PoolInputs(samples=samples)).scores[0], 0.25)
