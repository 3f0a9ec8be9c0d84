"""learning_loss: the order is the predicted loss, and a useful loss predictor finds the high-loss items."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from plugins.strategies import Input, PoolInputs, build_strategy


@settings(max_examples=60, deadline=None)
@given(loss=arrays(np.float64, st.integers(1, 40), elements=st.integers(0, 8).map(lambda k: k / 4)))
def test_order_sorts_the_predicted_loss(loss) -> None:
    """Highest predicted loss first; equal losses keep their pool order."""
    ranking = build_strategy("learning_loss", dtype="float64").rank(PoolInputs(predicted_loss=loss))
    expected = sorted(range(len(loss)), key=lambda i: (-loss[i], i))
    np.testing.assert_array_equal(ranking.order, expected)
    np.testing.assert_array_equal(ranking.scores, loss)


def test_a_correlated_predictor_beats_random_on_true_loss() -> None:
    rng = np.random.default_rng(0)
    true_loss = rng.gamma(2.0, size=400)
    predicted = true_loss + rng.normal(scale=1.0, size=400)  # correlation ~0.8, and sometimes negative
    pool = PoolInputs(predicted_loss=predicted)
    k = 40
    picked = true_loss[build_strategy("learning_loss").rank(pool).top(k)].sum()
    random_sums = [true_loss[build_strategy("random", seed=s).rank(pool).top(k)].sum() for s in range(30)]
    assert picked > 1.5 * max(random_sums)


def test_needs_the_loss_prediction_head() -> None:
    assert build_strategy("learning_loss").required_inputs() == {Input.PREDICTED_LOSS}
