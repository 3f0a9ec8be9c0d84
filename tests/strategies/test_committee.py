"""vote_entropy and kl_consensus against their formulas, computed member by member."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plugins.strategies import PoolInputs, build_strategy

sample_tensors = arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 6), st.integers(1, 5)),
                        elements=st.floats(0.0, 1.0)).filter(lambda a: (a.sum(axis=2) > 1e-3).all()).map(
    lambda a: a / a.sum(axis=2, keepdims=True))
TOL = 1e-9


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def _reference_vote_entropy(item: np.ndarray) -> float:
    votes = Counter(max(range(item.shape[1]), key=lambda c: (item[s, c], -c)) for s in range(item.shape[0]))
    return _entropy([v / item.shape[0] for v in votes.values()])


def _consensus_entropy(item: np.ndarray) -> float:
    return _entropy([sum(float(item[s, c]) for s in range(item.shape[0])) / item.shape[0]
                     for c in range(item.shape[1])])


def _reference_kl(item: np.ndarray) -> float:
    k, c = item.shape
    avg = [sum(float(item[s, cls]) for s in range(k)) / k for cls in range(c)]
    return sum(float(item[s, cls]) * math.log(float(item[s, cls]) / avg[cls])
               for s in range(k) for cls in range(c) if item[s, cls] > 0) / k


def _disagreeing_then_flat_pool(n_each: int = 30, k: int = 10, c: int = 5, seed: int = 1) -> np.ndarray:
    """First half: members confident but disagreeing. Second half: members agree on a flat prediction."""
    rng = np.random.default_rng(seed)
    disagreeing = np.full((n_each, k, c), 0.05 / (c - 1))
    disagreeing[np.arange(n_each)[:, None], np.arange(k)[None], rng.integers(0, c, (n_each, k))] = 0.95
    flat = rng.dirichlet(np.full(c, 50.0), size=n_each)
    return np.concatenate([disagreeing, np.repeat(flat[:, None], k, axis=1)])


def _rank(name: str, samples: np.ndarray):
    return build_strategy(name, dtype="float64").rank(PoolInputs(samples=samples))


@settings(max_examples=60, deadline=None)
@given(samples=sample_tensors)
def test_vote_entropy_matches_the_formula_and_breaks_ties_by_consensus(samples) -> None:
    ranking = _rank("vote_entropy", samples)
    votes = np.array([_reference_vote_entropy(item) for item in samples])
    consensus = np.array([_consensus_entropy(item) for item in samples])
    np.testing.assert_allclose(ranking.scores, votes, atol=1e-12)
    for a, b in zip(ranking.order[:-1], ranking.order[1:]):
        assert votes[a] >= votes[b] - TOL
        if abs(votes[a] - votes[b]) <= TOL:
            assert consensus[a] >= consensus[b] - TOL


def test_vote_entropy_ties_keep_pool_order() -> None:
    rng = np.random.default_rng(0)
    items = rng.dirichlet(np.ones(3), size=(4, 5))
    samples = items[[0, 1, 2, 0, 3, 1, 0, 2]]  # exact duplicates: equal votes and equal consensus
    order = list(_rank("vote_entropy", samples).order)
    for copies in ([0, 3, 6], [1, 5], [2, 7]):
        assert [i for i in order if i in copies] == copies


@settings(max_examples=30, deadline=None)
@given(samples=sample_tensors, data=st.data())
def test_vote_entropy_is_zero_when_all_members_agree(samples, data) -> None:
    n, k, c = samples.shape
    winner = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    agreeing = 0.4 * samples
    agreeing[np.arange(n), :, winner] += 0.6  # every member's argmax is the winner, probabilities differ
    assert np.abs(_rank("vote_entropy", agreeing).scores).max() == 0.0


@settings(max_examples=60, deadline=None)
@given(samples=sample_tensors)
def test_kl_consensus_matches_the_formula_and_equals_bald(samples) -> None:
    kl = _rank("kl_consensus", samples).scores
    np.testing.assert_allclose(kl, [max(0.0, _reference_kl(item)) for item in samples], atol=1e-9)
    assert (kl >= 0).all()
    # 1/K sum_k KL(P_k || P_avg) = H[P_avg] - 1/K sum_k H[P_k]: the same mutual information as BALD
    np.testing.assert_allclose(kl, _rank("bald", samples).scores, atol=1e-9)


def test_committees_rank_disagreement_first_where_entropy_does_not() -> None:
    samples = _disagreeing_then_flat_pool()
    half = len(samples) // 2
    for name in ("kl_consensus", "vote_entropy"):
        order = build_strategy(name).rank(PoolInputs(samples=samples)).order
        assert set(order[:half]) == set(range(half)), name
    entropy_order = build_strategy("entropy").rank(PoolInputs(probs=samples.mean(axis=1))).order
    assert len(set(entropy_order[:half]) & set(range(half))) < half / 2


def test_seed_example_values() -> None:
    # three members voting a, a, b: vote entropy H(2/3, 1/3)
    samples = np.array([[[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]])
    expected = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    assert np.isclose(build_strategy("vote_entropy").rank(PoolInputs(samples=samples)).scores[0], expected)
