"""The Wilson interval and the held-out view behind `lsal versions` and the admin status."""

from __future__ import annotations

import pytest

from core.admin import MIN_HOLDOUT, holdout_view, wilson_interval


def test_wilson_interval_matches_the_textbook_values():
    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    low, high = wilson_interval(1.0, 10)  # 10 of 10 right: far from certain
    assert low == pytest.approx(0.7225, abs=1e-4) and high == pytest.approx(1.0)
    assert wilson_interval(0.0, 20)[0] == 0.0 and wilson_interval(0.0, 20)[1] > 0.1


def test_holdout_view_shows_nothing_below_the_minimum_and_keeps_old_records_readable():
    assert MIN_HOLDOUT >= 20
    assert not holdout_view({"holdout_accuracy": 1.0, "holdout_size": MIN_HOLDOUT - 1})["shown"]
    shown = holdout_view({"holdout_accuracy": 0.9, "holdout_size": MIN_HOLDOUT})
    assert shown["shown"] and shown["n"] == MIN_HOLDOUT and shown["interval95"][0] < 0.9 < shown["interval95"][1]
    legacy = holdout_view({"holdout_accuracy": 0.75})  # recorded before held-out items were counted
    assert legacy["shown"] and legacy["n"] is None and legacy["interval95"] is None
    assert holdout_view({}) == {"n": None, "accuracy": None, "interval95": None, "min_n": MIN_HOLDOUT,
                                "shown": False}
