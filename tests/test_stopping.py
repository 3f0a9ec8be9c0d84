"""Stopping criteria on hand-made histories: each fires on the round it should, not one round earlier."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from plugins.stopping import (
    RoundRecord,
    StoppingRule,
    budget_exhausted,
    converged,
    should_stop,
    target_reached,
    uncertainty_below,
)


def _history(labels: Sequence[int], metrics: Sequence[float | None] | None = None,
             uncertainties: Sequence[float | None] | None = None) -> list[RoundRecord]:
    metrics = metrics or [None] * len(labels)
    uncertainties = uncertainties or [None] * len(labels)
    return [RoundRecord(labels=n, metric=m, max_uncertainty=u)
            for n, m, u in zip(labels, metrics, uncertainties, strict=True)]


def _first_round(history: list[RoundRecord], fires: Callable[[list[RoundRecord]], object]) -> int | None:
    """Number of rounds after which the criterion first fires (None: never)."""
    return next((k for k in range(len(history) + 1) if fires(history[:k])), None)


def test_budget_fires_on_the_round_that_reaches_it() -> None:
    history = _history([50, 100, 150, 200])
    assert _first_round(history, lambda h: budget_exhausted(h, 150)) == 3
    assert _first_round(history, lambda h: budget_exhausted(h, 151)) == 4
    assert _first_round(history, lambda h: budget_exhausted(h, 201)) is None


def test_target_fires_on_the_first_round_whose_metric_reaches_it() -> None:
    history = _history([10, 20, 30, 40, 50], metrics=[0.5, None, 0.79, 0.8, 0.85])
    assert _first_round(history, lambda h: target_reached(h, 0.8)) == 4
    assert _first_round(history, lambda h: target_reached(h, 0.9)) is None
    # an unmeasured round keeps the last measured metric
    assert target_reached(_history([10, 20], metrics=[0.9, None]), 0.8)


def test_convergence_fires_once_the_best_metric_stalls_for_patience_rounds() -> None:
    metrics = [0.50, 0.60, 0.65, 0.66, 0.665, 0.667]
    history = _history(range(10, 70, 10), metrics=metrics)
    # gains of the best metric over the last 2 rounds: -, -, .15, .06, .015 (< .02: fires), .007
    assert _first_round(history, lambda h: converged(h, min_gain=0.02, patience=2)) == 5
    # over 3 rounds: .16, .065, .017 (fires)
    assert _first_round(history, lambda h: converged(h, min_gain=0.02, patience=3)) == 6
    assert _first_round(history, lambda h: converged(h, min_gain=0.001, patience=2)) is None


def test_a_drop_is_no_gain_and_unmeasured_rounds_do_not_count() -> None:
    assert converged(_history([1, 2, 3, 4], metrics=[0.5, 0.7, 0.6, 0.65]), min_gain=0.01, patience=2)
    gappy = _history([1, 2, 3, 4, 5], metrics=[0.5, None, 0.7, None, 0.71])
    assert not converged(gappy[:4], min_gain=0.05, patience=2), "only two measured rounds so far"
    assert not converged(gappy, min_gain=0.05, patience=2), "0.5 -> 0.71 over the last two measured rounds"
    assert converged(gappy, min_gain=0.05, patience=1)


metric_lists = st.lists(st.one_of(st.none(), st.integers(0, 100).map(lambda k: k / 100)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(metrics=metric_lists, min_gain=st.sampled_from([0.01, 0.05, 0.2]), patience=st.integers(1, 4))
def test_convergence_matches_a_round_by_round_check(metrics, min_gain, patience) -> None:
    """Converged iff each of the last `patience` measured rounds stayed below best-before-them + min_gain."""
    measured = [m for m in metrics if m is not None]
    if len(measured) <= patience:
        expected = False
    else:
        best_before = max(measured[:len(measured) - patience])
        expected = all(m < best_before + min_gain for m in measured[len(measured) - patience:])
    history = _history(range(len(metrics)), metrics=metrics)
    assert converged(history, min_gain, patience) == expected


def test_uncertainty_fires_strictly_below_the_threshold() -> None:
    history = _history([10, 20, 30, 40], uncertainties=[0.9, 0.5, 0.3, 0.1])
    assert _first_round(history, lambda h: uncertainty_below(h, 0.3)) == 4
    assert _first_round(history, lambda h: uncertainty_below(h, 0.31)) == 3
    assert _first_round(history, lambda h: uncertainty_below(h, 0.05)) is None


def test_nothing_fires_on_an_empty_history() -> None:
    rule = StoppingRule(budget=1, target=0.0, min_gain=1.0, patience=1, max_uncertainty=1.0)
    assert should_stop([], rule) is None


def test_should_stop_names_the_first_criterion_that_fires() -> None:
    history = _history([100, 200, 300, 400, 500],
                       metrics=[0.6, 0.7, 0.71, 0.712, 0.95], uncertainties=[0.9, 0.8, 0.6, 0.4, 0.05])
    rule = StoppingRule(budget=500, target=0.9, min_gain=0.02, patience=2, max_uncertainty=0.5)
    reasons = [should_stop(history[:k], rule) for k in range(1, 6)]
    assert reasons[:3] == [None, None, None]
    assert reasons[3].startswith("converged")  # .7 -> .712 over two rounds; uncertainty .4 fires too
    assert reasons[4].startswith("budget")  # everything fires; the budget is checked first
    no_budget = rule.model_copy(update={"budget": None})
    assert should_stop(history, no_budget).startswith("target")
    only_uncertainty = StoppingRule(max_uncertainty=0.5)
    assert _first_round(history, lambda h: should_stop(h, only_uncertainty)) == 4
    assert should_stop(history, StoppingRule()) is None


@pytest.mark.parametrize("bad", [{"budget": 0}, {"min_gain": 0.01}, {"patience": 3},
                                 {"min_gain": 0.0, "patience": 2}, {"min_gain": 0.1, "patience": 0},
                                 {"no_such_criterion": 1}])
def test_invalid_rules_are_rejected(bad) -> None:
    with pytest.raises(ValidationError):
        StoppingRule(**bad)


def test_round_records_validate() -> None:
    with pytest.raises(ValidationError):
        RoundRecord(labels=-1)
    with pytest.raises(ValueError, match="patience"):
        converged(_history([1, 2], metrics=[0.1, 0.2]), min_gain=0.1, patience=0)
