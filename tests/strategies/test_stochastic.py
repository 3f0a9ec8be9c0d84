"""stochastic: first and second picks over many seeds follow sampling without replacement from the weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from plugins.strategies import (
    Input,
    InvalidInputError,
    InvalidParamsError,
    PoolInputs,
    UnknownStrategyError,
    build_strategy,
)

SCORES = np.array([0.2, 0.5, 1.0, 1.5])
BETA = 1.3
DRAWS = 1200
# Sampling distributions fail a chi-square test at this level only by (fixed-seed) bad luck.
ALPHA = 1e-3


def _weights(mode: str, scores: np.ndarray, beta: float) -> np.ndarray:
    """w_i of the paper, straight from the definitions."""
    if mode == "power":
        return scores**beta
    if mode == "softmax":
        return np.exp(beta * scores)
    ranks = np.empty(len(scores))
    for rank, item in enumerate(sorted(range(len(scores)), key=lambda i: -scores[i]), start=1):
        ranks[item] = rank
    return ranks**-beta


def _stochastic(**params) -> object:
    return build_strategy("stochastic", base={"name": "learning_loss"}, **params)


def _chi_square_p(observed: Counter, expected_probs: dict, draws: int) -> float:
    cells = sorted(expected_probs)
    obs = np.array([observed.get(c, 0) for c in cells], dtype=float)
    exp = np.array([expected_probs[c] for c in cells]) * draws
    assert exp.min() >= 5, "too few draws for a chi-square test"
    return float(stats.chisquare(obs, exp).pvalue)


@pytest.mark.parametrize("mode", ["power", "softmax", "softrank"])
def test_first_and_second_picks_follow_sampling_without_replacement(mode) -> None:
    pool = PoolInputs(predicted_loss=SCORES)
    orders = [_stochastic(mode=mode, beta=BETA, seed=s).rank(pool).order for s in range(DRAWS)]
    w = _weights(mode, SCORES, BETA)
    n = len(w)
    first = {i: w[i] / w.sum() for i in range(n)}
    assert _chi_square_p(Counter(int(o[0]) for o in orders), first, DRAWS) > ALPHA
    # P(first = i, second = j) = w_i / W * w_j / (W - w_i): the second pick is drawn from what is left
    pairs = {(i, j): first[i] * w[j] / (w.sum() - w[i]) for i in range(n) for j in range(n) if i != j}
    pair_counts = Counter((int(o[0]), int(o[1])) for o in orders)
    assert _chi_square_p(pair_counts, pairs, DRAWS) > ALPHA
    # the check has power: a second pick that ignored the first one's removal would be rejected
    independent = {(i, j): w[i] * w[j] for i in range(n) for j in range(n) if i != j}
    independent = {ij: v / sum(independent.values()) for ij, v in independent.items()}
    assert _chi_square_p(pair_counts, independent, DRAWS) < 1e-6


@pytest.mark.parametrize("mode", ["power", "softmax", "softrank"])
def test_a_cold_sampler_recovers_the_base_order(mode) -> None:
    scores = np.random.default_rng(0).permutation(np.arange(1.0, 61.0))
    pool = PoolInputs(predicted_loss=scores)
    base = build_strategy("learning_loss").rank(pool)
    for seed in range(3):
        ranking = _stochastic(mode=mode, beta=1e4, seed=seed).rank(pool)
        np.testing.assert_array_equal(ranking.order, base.order)
        np.testing.assert_array_equal(ranking.scores, base.scores)


def test_a_warm_sampler_is_not_the_base_order() -> None:
    pool = PoolInputs(predicted_loss=np.arange(1.0, 61.0))
    ranking = _stochastic(beta=1.0).rank(pool)
    assert not np.array_equal(ranking.order, np.arange(60)[::-1])
    assert not np.array_equal(ranking.order, _stochastic(beta=1.0, seed=1).rank(pool).order)


def test_a_base_without_scores_is_sampled_by_rank() -> None:
    pool = PoolInputs(n_items=40)
    base_order = build_strategy("random", seed=7).rank(pool).order
    base = {"name": "random", "params": {"seed": 7}}
    ranking = build_strategy("stochastic", base=base, beta=1e4).rank(pool)
    np.testing.assert_array_equal(ranking.order, base_order)
    assert ranking.info["mode"] == "softrank"
    assert ranking.scores is None


def test_power_mode_rejects_negative_scores_and_clips_rounding_noise() -> None:
    with pytest.raises(InvalidInputError, match="non-negative"):
        _stochastic().rank(PoolInputs(predicted_loss=np.array([0.5, -0.2, 1.0])))
    ranking = _stochastic().rank(PoolInputs(predicted_loss=np.array([0.5, -1e-9, 1.0, 0.0])))
    assert sorted(ranking.order[2:]) == [1, 3], "zero and rounding-negative scores come last"
    softmax = _stochastic(mode="softmax").rank(PoolInputs(predicted_loss=np.array([0.5, -0.2, 1.0])))
    assert sorted(softmax.order) == [0, 1, 2]


def test_all_zero_scores_give_a_uniform_random_order() -> None:
    pool = PoolInputs(predicted_loss=np.zeros(6))
    firsts = Counter(int(_stochastic(seed=s).rank(pool).order[0]) for s in range(300))
    assert _chi_square_p(firsts, {i: 1 / 6 for i in range(6)}, 300) > ALPHA


def test_inputs_and_params_come_from_the_base() -> None:
    strategy = build_strategy("stochastic", base={"name": "entropy"})
    assert strategy.required_inputs() == {Input.PROBS}
    with pytest.raises(UnknownStrategyError):
        build_strategy("stochastic", base={"name": "no_such_strategy"})
    with pytest.raises(InvalidParamsError):
        build_strategy("stochastic", base={"name": "entropy", "params": {"no_such_parameter": 1}})
    with pytest.raises(InvalidParamsError):
        build_strategy("stochastic", base={"name": "entropy"}, beta=0)
    with pytest.raises(InvalidParamsError):
        build_strategy("stochastic", base={"name": "entropy"}, mode="gumbel")
