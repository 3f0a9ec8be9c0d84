"""The stable held-out set (plugins.holdout) and the promotion gate's verdict (plugins.promotion)."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.holdout import assign_holdout
from plugins.promotion import judge, paired_bootstrap


def _accuracy(y, probs) -> float:
    return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(y)))


def test_a_task_once_held_out_stays_held_out_and_once_trained_stays_trained_as_the_project_grows():
    rng = np.random.default_rng(0)
    sides: dict[int, bool] = {}
    labels: dict[int, int] = {}
    for round_ in range(8):  # 40 new labeled tasks per round, 3 classes, one of them rare
        for t in range(round_ * 40, round_ * 40 + 40):
            labels[t] = int(rng.choice(3, p=[0.6, 0.3, 0.1]))
        tasks = sorted(labels)
        new = assign_holdout(tasks, np.array([labels[t] for t in tasks]), 0.2, 7, sides)
        assert all(new[t] == side for t, side in sides.items())  # nobody changes sides
        sides = new
        y = np.array([labels[t] for t in tasks])
        held = np.array([sides[t] for t in tasks])
        for c in range(3):
            members = int((y == c).sum())
            if members >= 3:  # each class's held-out share stays at the fraction (rounding, approached from below)
                assert int(held[y == c].sum()) == round(0.2 * members)


def test_another_fraction_starts_over():
    tasks = list(range(50))
    y = np.zeros(50, dtype=int)
    a = assign_holdout(tasks, y, 0.2, 0, {})
    b = assign_holdout(tasks, y, 0.5, 0, {})  # the caller passes no known sides for a new fraction
    assert sum(a.values()) == 10 and sum(b.values()) == 25


def test_the_paired_bootstrap_resamples_the_same_items_for_both_models():
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    a = np.eye(2)[y]  # always right
    b = np.eye(2)[1 - y]  # always wrong
    full, diffs = paired_bootstrap(_accuracy, y, a, b, resamples=200, seed=0)
    assert full == 1.0 and np.all(diffs == 1.0)  # unpaired resamples would scatter


def _two_models(n: int, right_a: float, right_b: float, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a_ok, b_ok = rng.uniform(size=n) < right_a, rng.uniform(size=n) < right_b
    return y, np.eye(3)[np.where(a_ok, y, (y + 1) % 3)], np.eye(3)[np.where(b_ok, y, (y + 1) % 3)]


def test_a_clearly_worse_candidate_is_held_back_with_both_figures():
    y, candidate, serving = _two_models(400, 0.70, 0.90, seed=1)
    verdict = judge("holdout_accuracy", _accuracy, y, candidate, serving, "v3")
    assert not verdict.promote and verdict.upper < 0 and verdict.items == 400
    assert verdict.candidate == pytest.approx(_accuracy(y, candidate))
    assert verdict.serving == pytest.approx(_accuracy(y, serving))
    assert verdict.reason.startswith("held back: worse beyond noise") and "of v3" in verdict.reason


def test_a_candidate_within_noise_is_promoted_and_a_margin_forgives_a_small_fall():
    y, candidate, serving = _two_models(60, 0.86, 0.88, seed=2)
    verdict = judge("holdout_accuracy", _accuracy, y, candidate, serving, "v3")
    assert verdict.promote and verdict.upper >= 0 and verdict.reason.startswith("promoted: not worse")
    y, candidate, serving = _two_models(2000, 0.85, 0.88, seed=3)
    assert not judge("holdout_accuracy", _accuracy, y, candidate, serving, "v3").promote
    assert judge("holdout_accuracy", _accuracy, y, candidate, serving, "v3", margin=0.1).promote


def test_nothing_to_compare_with_promotes_and_says_why():
    y = np.array([0, 1])
    verdict = judge("holdout_accuracy", _accuracy, y, np.eye(2)[y], None, "no-model baseline")
    assert verdict.promote and "nothing to compare with" in verdict.reason
    empty = judge("holdout_accuracy", _accuracy, y[:0], np.zeros((0, 2)), np.zeros((0, 2)), "v1")
    assert empty.promote and "no held-out items" in empty.reason


class _Sabotaged:
    """The logistic model, except that the `bad`-th fit learns shuffled labels (a batch of wrong labels)."""

    fits = 0

    def __init__(self, bad: int) -> None:
        from plugins.models import build_model

        self.model = build_model("logistic", 10, committee=1, seed=0)
        type(self).fits += 1
        self.bad = type(self).fits == bad
        self.provides = self.model.provides

    def fit(self, x, y, *args, **kwargs):
        return self.model.fit(x, (np.asarray(y) + 1) % 10 if self.bad else y)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_the_simulator_serves_what_the_gate_promotes_and_keeps_the_served_model_over_a_worse_one():
    from plugins.datasets import digits
    from plugins.loop import run_loop
    from plugins.promotion import GateRule
    from plugins.strategies import strategy_for
    from plugins.specs import StrategySpec

    data = digits(test_fraction=0.3, seed=0)
    _Sabotaged.fits = 0
    results = run_loop(lambda: _Sabotaged(bad=4), strategy_for(StrategySpec(name="random"), 40, 0),
                       data.x_train, data.y_train, data.x_test, data.y_test, initial=100, batch=40, rounds=5,
                       seed=0, gate=GateRule())
    promoted = [r.promoted for r in results]
    assert promoted[3] is False and all(promoted[:3]) and promoted[4]  # only the sabotaged fit is held back
    assert results[3].accuracy == results[2].accuracy  # the served model, measured again
    assert results[3].accuracy > 0.8
    plain = run_loop(lambda: _Sabotaged(bad=4), strategy_for(StrategySpec(name="random"), 40, 0), data.x_train,
                     data.y_train, data.x_test, data.y_test, initial=100, batch=40, rounds=3, seed=0)
    assert plain[2].promoted is None  # no gate: every model serves (this one the 7th fit, not sabotaged)


def test_largest_fall_is_the_biggest_drop_between_consecutive_rounds():
    from plugins.simulation import largest_fall

    curves = np.array([[0.5, 0.7, 0.65, 0.8], [0.5, 0.6, 0.7, 0.69]])
    assert largest_fall(curves) == pytest.approx(0.05)
    assert largest_fall(curves.mean(axis=0)[None]) == pytest.approx(0.0)  # the mean rises every round
    assert largest_fall(np.array([[0.1, 0.2]])) == 0.0 and largest_fall(np.array([[0.3]])) == 0.0
