"""The whole-pool order and the in-pass checks of the cheap strategies, against slow obvious references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plugins.strategies import InvalidInputError, PoolInputs, build_strategy
from plugins.strategies.base import checked_blocks, descending_order, order_by_scores


def _stable_reference(scores: np.ndarray) -> np.ndarray:
    """The definition: descending score, ties in pool order (a stable sort of -score)."""
    return np.argsort(-scores.astype(np.float64), kind="stable")


def _python_reference(scores: np.ndarray) -> list[int]:
    """The same order by Python's own sort of (-score, index) pairs."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))


SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 0.5, 0.5],
                   dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_order_is_the_stable_sort_with_ties_zeros_and_infinities(dtype) -> None:
    rng = np.random.default_rng(0)
    coarse = np.round(rng.normal(size=50_000) * 4).astype(dtype)  # many ties
    with np.errstate(over="ignore"):  # float16 has no 3.4e38: it becomes inf, which is fine here
        special = SPECIAL.astype(dtype)
    for scores in (coarse, special, rng.random(3001).astype(dtype), coarse[:1], coarse[:0]):
        order = descending_order(scores)
        assert order.dtype == np.int64
        np.testing.assert_array_equal(order, _stable_reference(scores))
    small = np.concatenate([SPECIAL, coarse[:300].astype(np.float32)])
    assert descending_order(small).tolist() == _python_reference(small)


def test_nan_scores_fall_back_to_numpy_order() -> None:
    scores = np.array([0.1, np.nan, 0.3, 0.3, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(descending_order(scores), [2, 3, 0, 1, 4])


@settings(max_examples=80, deadline=None)
@given(arrays(np.float32, st.integers(0, 400),
              elements=st.one_of(st.sampled_from([0.0, -0.0, 1.0, 0.25]),
                                 st.floats(-1e6, 1e6, width=32, allow_subnormal=True))))
def test_order_matches_python_sorted_on_any_scores(scores) -> None:
    assert descending_order(scores).tolist() == _python_reference(scores)


def test_order_by_scores_on_torch_tensors() -> None:
    scores = torch.tensor([0.2, 0.5, 0.2, -0.0, 0.0, 0.5])
    assert order_by_scores(scores).tolist() == [1, 5, 0, 2, 3, 4]
    assert order_by_scores(scores.double()).tolist() == [1, 5, 0, 2, 3, 4]


def _entropy(row: list[float]) -> float:
    return -sum(p * math.log(p) for p in row if p > 0)


def _reference_scores(name: str, probs: np.ndarray) -> np.ndarray:
    """Item by item, in Python floats."""
    out = []
    for row in probs.tolist():
        if name == "entropy":
            out.append(_entropy(row))
        elif name == "margin":
            top = sorted(row, reverse=True)
            out.append(1.0 - (top[0] - top[1]))
        else:
            out.append(1.0 - max(row))
    return np.array(out)


def _probs(n: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.3), size=n)
    p[::7] = np.round(p[::7], 1)  # repeated rows: ties across block boundaries
    p[::7] /= p[::7].sum(axis=1, keepdims=True)
    p[5, :] = 0.0
    p[5, 0] = 1.0  # a one-hot row: 0 log 0 = 0
    return p


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence"])
def test_scores_and_order_over_many_blocks_match_the_item_by_item_reference(name) -> None:
    probs = _probs(30_000, 10, seed=1)  # several blocks of the scoring pass
    ranking = build_strategy(name, dtype="float64").rank(PoolInputs(probs=probs))
    np.testing.assert_allclose(ranking.scores, _reference_scores(name, probs), atol=1e-12)
    np.testing.assert_array_equal(ranking.order, _stable_reference(ranking.scores))
    single = build_strategy(name).rank(PoolInputs(probs=probs.astype(np.float32)))  # the float32 path
    np.testing.assert_allclose(single.scores, _reference_scores(name, probs), atol=2e-5)
    np.testing.assert_array_equal(single.order, _stable_reference(single.scores))


def test_bald_over_many_blocks_matches_the_item_by_item_reference() -> None:
    rng = np.random.default_rng(2)
    samples = rng.dirichlet(np.full(4, 0.5), size=(12_000, 5))  # 5 samples, 4 classes: several blocks
    ranking = build_strategy("bald", dtype="float64").rank(PoolInputs(samples=samples))
    expected = []
    for item in samples[:500].tolist():
        mean = [sum(s[c] for s in item) / len(item) for c in range(4)]
        expected.append(max(0.0, _entropy(mean) - sum(_entropy(s) for s in item) / len(item)))
    np.testing.assert_allclose(ranking.scores[:500], expected, atol=1e-12)
    mean = samples.mean(axis=1)
    whole = -(mean * np.log(mean)).sum(1) + (samples * np.log(samples)).sum(2).mean(1)
    np.testing.assert_allclose(ranking.scores, np.maximum(whole, 0.0), atol=1e-12)
    np.testing.assert_array_equal(ranking.order, _stable_reference(ranking.scores))


@pytest.mark.parametrize("name,field", [("entropy", "probs"), ("margin", "probs"),
                                        ("least_confidence", "probs"), ("bald", "samples")])
@pytest.mark.parametrize("bad", ["nan", "inf", "negative", "logits"])
def test_a_bad_value_in_a_late_block_is_caught_by_the_pass(name, field, bad) -> None:
    rng = np.random.default_rng(3)
    shape = (40_000, 10) if field == "probs" else (20_000, 5, 4)
    array = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)
    row = array.reshape(-1, shape[-1])[-7]  # far past the first block
    if bad == "nan":
        row[1] = np.nan
    elif bad == "inf":
        row[1] = np.inf
    elif bad == "negative":
        row[0] += row[1] + 0.25  # the row still sums to 1
        row[1] = -0.25
    else:
        row *= 3.0
    match = {"nan": "NaN or infinite", "inf": "NaN or infinite", "negative": "probabilities in",
             "logits": "softmax"}[bad]
    with pytest.raises(InvalidInputError, match=f"{field}.*{match}|{match}.*{field}|{field} {match}"):
        build_strategy(name).rank(PoolInputs(**{field: array}))


def test_checked_blocks_cover_every_row_once() -> None:
    x = torch.rand(10_001, 3)
    x /= x.sum(dim=1, keepdim=True)
    seen = torch.zeros(10_001, dtype=torch.int64)
    for rows, block in checked_blocks("probs", x, True, block_bytes=1000):
        assert torch.equal(block, x[rows])
        seen[rows] += 1
    assert bool((seen == 1).all())
