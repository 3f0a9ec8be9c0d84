"""least_confidence, margin and entropy against their formulas, computed item by item."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plugins.strategies import PoolInputs, build_strategy


def _reference(name: str, p: list[float]) -> float:
    if name == "least_confidence":
        return 1.0 - max(p)
    if name == "margin":
        top = sorted(p, reverse=True) + [0.0]
        return 1.0 - (top[0] - top[1]) if len(p) > 1 else 0.0
    return -sum(x * math.log(x) for x in p if x > 0)


probabilities = arrays(np.float64, st.tuples(st.integers(1, 30), st.integers(1, 6)),
                       elements=st.floats(0.0, 1.0)).filter(lambda a: (a.sum(axis=1) > 1e-3).all()).map(
    lambda a: a / a.sum(axis=1, keepdims=True))


@settings(max_examples=60, deadline=None)
@given(probs=probabilities)
def test_scores_match_the_formula(probs) -> None:
    for name in ("least_confidence", "margin", "entropy"):
        ranking = build_strategy(name, dtype="float64").rank(PoolInputs(probs=probs))
        expected = np.array([_reference(name, list(row)) for row in probs])
        np.testing.assert_allclose(ranking.scores, expected, atol=1e-9)
        # the order is the scores, descending, ties broken by pool position
        ordered = ranking.scores[ranking.order]
        assert (np.diff(ordered) <= 1e-12).all()


def test_seed_example_values() -> None:
    probs = np.array([[0.5, 0.3, 0.2]])
    assert np.isclose(build_strategy("least_confidence").rank(PoolInputs(probs=probs)).scores[0], 0.5)
    assert np.isclose(build_strategy("margin").rank(PoolInputs(probs=probs)).scores[0], 1 - 0.2)
    assert np.isclose(build_strategy("entropy").rank(PoolInputs(probs=probs)).scores[0], 1.0297, atol=1e-4)


def test_binary_margin_and_least_confidence_agree_on_order() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200)
    probs = np.stack([p, 1 - p], axis=1)
    a = build_strategy("margin").rank(PoolInputs(probs=probs)).order
    b = build_strategy("least_confidence").rank(PoolInputs(probs=probs)).order
    np.testing.assert_array_equal(a, b)
