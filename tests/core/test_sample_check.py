"""Samples that cannot disagree: refused by the settings, reported by the models, and an error (never a
silent all-zero order) where a model is asked for them: the worker's rescore and the offline simulation."""

from __future__ import annotations

import numpy as np
import pytest

from core.project_settings import InvalidSettingsError, validate_settings
from plugins.datasets import digits
from plugins.loop import run_loop
from plugins.models import build_model
from plugins.strategies import Input, MissingInputError, build_strategy


def test_models_report_samples_that_cannot_disagree() -> None:
    assert build_model("logistic", 3, committee=1).unsupported(frozenset({Input.SAMPLES})) == {Input.SAMPLES}
    assert not build_model("logistic", 3, committee=2).unsupported(frozenset({Input.SAMPLES}))
    assert "mc_samples" in build_model("cnn", 3, mc_samples=1).sample_problem()
    assert "dropout" in build_model("cnn", 3, dropout=0.0).sample_problem()
    assert build_model("cnn", 3).sample_problem() is None
    assert "mc_samples" in build_model("detector", 2, mc_samples=1, pretrained="none").sample_problem()


def test_validate_settings_refuses_bald_with_a_committee_of_one() -> None:
    with pytest.raises(InvalidSettingsError, match="committee to 2 or more"):
        validate_settings({"strategy": {"name": "bald"}, "model": {"name": "logistic", "params": {"committee": 1}}})
    with pytest.raises(InvalidSettingsError, match="box_uncertainty"):  # a detector is told its own strategies
        validate_settings({"strategy": {"name": "box_bald"},
                           "model": {"name": "detector", "params": {"pretrained": "none", "mc_samples": 1}}})


def test_a_model_asked_for_samples_it_cannot_make_disagree_says_so() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8), np.arange(40) % 4
    one = build_model("logistic", 4, committee=1)
    one.fit(x, y)
    with pytest.raises(MissingInputError, match="committee to 2 or more"):
        one.pool_inputs(x[:5], frozenset({Input.PROBS, Input.SAMPLES}), x[:0], y[:0])
    assert one.pool_inputs(x[:5], frozenset({Input.PROBS}), x[:0], y[:0]).probs.shape == (5, 4)  # margin etc.
    two = build_model("logistic", 4, committee=2)
    two.fit(x, y)
    assert two.pool_inputs(x[:5], frozenset({Input.SAMPLES}), x[:0], y[:0]).samples.shape == (5, 2, 4)
    with pytest.raises(MissingInputError, match="mc_samples"):
        build_model("cnn", 4, mc_samples=1).pool_inputs(x[:5], frozenset({Input.SAMPLES}), x[:0], y[:0])
    with pytest.raises(MissingInputError, match="box_samples"):
        build_model("detector", 2, mc_samples=1, pretrained="none").pool_inputs(
            x[:5], frozenset({Input.BOXES, Input.BOX_SAMPLES}), x[:0], y[:0])


def test_the_simulation_stops_with_the_reason_instead_of_ranking_all_zero_scores() -> None:
    data = digits(test_fraction=0.3, seed=0)
    # the worker's rescore asks the serving model the same way (worker.score.score_tasks)
    with pytest.raises(MissingInputError, match="committee=1"):
        run_loop(lambda: build_model("logistic", 10, committee=1), build_strategy("bald"), data.x_train,
                 data.y_train, data.x_test, data.y_test, initial=20, batch=10, rounds=1)
