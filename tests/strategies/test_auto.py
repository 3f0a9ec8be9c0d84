"""auto: the cold/warm decision, where it switches, and that the chosen child's ranking is passed through."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from plugins.strategies import Input, InvalidParamsError, PoolInputs, UnknownStrategyError, build_strategy

COLD = {"name": "learning_loss"}  # needs only predicted_loss: available before any model is trained
WARM = {"name": "entropy"}  # needs the model's probabilities


def _auto(**params) -> object:
    return build_strategy("auto", cold=COLD, warm=WARM, **params)


def _pool(n_labeled: int, c: int = 4, n: int = 30, with_probs: bool = True) -> PoolInputs:
    rng = np.random.default_rng(n_labeled)
    probs = rng.dirichlet(np.ones(c), size=n)
    return PoolInputs(probs=probs if with_probs else None, predicted_loss=rng.gamma(2.0, size=n),
                      labeled_labels=np.arange(n_labeled) % c, n_classes=c)


def test_missing_probabilities_force_the_cold_start() -> None:
    pool = _pool(n_labeled=400, with_probs=False)
    ranking = _auto().rank(pool)
    assert ranking.info["chosen"] == "learning_loss"
    assert "probs" in ranking.info["reason"] and ranking.info["reason"].startswith("cold")
    np.testing.assert_array_equal(ranking.order, build_strategy(COLD).rank(pool).order)


def test_too_few_labels_per_class_is_a_cold_start() -> None:
    ranking = _auto(min_labels_per_class=10).rank(_pool(n_labeled=20))
    assert ranking.info["chosen"] == "learning_loss"
    assert ranking.info["reason"].startswith("cold") and "labels per class" in ranking.info["reason"]
    assert "5 labels per class" in ranking.info["reason"]


def test_enough_labels_and_a_model_is_warm() -> None:
    pool = _pool(n_labeled=40)
    ranking = _auto(min_labels_per_class=10).rank(pool)
    child = build_strategy(WARM).rank(pool)
    assert ranking.info["chosen"] == "entropy" and ranking.info["reason"].startswith("warm")
    assert ranking.strategy == "auto"
    np.testing.assert_array_equal(ranking.order, child.order)
    np.testing.assert_array_equal(ranking.scores, child.scores)


def test_no_labeled_set_is_a_cold_start() -> None:
    pool = dataclasses.replace(_pool(n_labeled=0), labeled_labels=None)
    assert _auto(min_labels_per_class=1).rank(pool).info["chosen"] == "learning_loss"
    assert _auto(min_labels_per_class=0).rank(pool).info["chosen"] == "entropy"


@pytest.mark.parametrize("min_labels", [0, 1, 3, 10])
@pytest.mark.parametrize("c", [2, 5])
def test_switch_point_moves_with_min_labels_per_class(min_labels, c) -> None:
    """Warm exactly from c * min_labels labels on: len(labeled) / c >= min_labels_per_class."""
    chosen = {n_labeled: _auto(min_labels_per_class=min_labels).rank(_pool(n_labeled, c=c)).info["chosen"]
              for n_labeled in range(0, c * min_labels + 3)}
    switch = c * min_labels
    assert all(chosen[k] == "learning_loss" for k in chosen if k < switch)
    assert all(chosen[k] == "entropy" for k in chosen if k >= switch)


def test_child_info_is_kept() -> None:
    warm = {"name": "stochastic", "params": {"base": {"name": "entropy"}, "mode": "softmax"}}
    ranking = build_strategy("auto", cold=COLD, warm=warm, min_labels_per_class=1).rank(_pool(n_labeled=8))
    assert ranking.info["chosen"] == "stochastic"
    assert ranking.info["mode"] == "softmax" and ranking.info["base"] == "entropy"


def test_inputs_cold_required_warm_optional() -> None:
    strategy = _auto()
    assert strategy.required_inputs() == {Input.PREDICTED_LOSS}
    assert {Input.PROBS, Input.LABELED_LABELS} <= strategy.optional_inputs()
    with pytest.raises(UnknownStrategyError):
        build_strategy("auto", cold=COLD, warm={"name": "no_such_strategy"})
    with pytest.raises(InvalidParamsError):
        build_strategy("auto", cold=COLD, warm=WARM, min_labels_per_class=-1)
