"""Confident pre-labels (plugins.confident) against slow, obviously correct references on small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plugins.confident import (ConfidentRule, calibrated, choose_threshold, confident_rule,
                               fit_inverse_temperature, items_needed, lower_bound, needed_items, sequence_level)


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))


@pytest.mark.parametrize(("k", "n"), [(1, 1), (9, 10), (20, 20), (37, 50), (3, 7)])
def test_lower_bound_is_the_p_where_seeing_k_or_more_right_becomes_as_likely_as_the_error_level(k, n):
    # Clopper-Pearson: the lower bound p_L solves P(X >= k | p_L) = 1 - level
    bound = lower_bound(k, n, 0.95)
    assert _binomial_tail(k, n, bound) == pytest.approx(0.05, abs=1e-6)
    assert _binomial_tail(k, n, bound + 1e-3) > 0.05  # any larger p makes k right ones more likely


def test_lower_bound_of_nothing_right_is_zero():
    assert lower_bound(0, 10) == 0.0 and lower_bound(0, 0) == 0.0


@pytest.mark.parametrize(("target", "level"), [(0.99, 0.95), (0.9, 0.9), (0.95, 0.99), (0.999, 0.95)])
def test_items_needed_is_the_fewest_all_right_items_whose_bound_reaches_the_target(target, level):
    n = items_needed(target, level)
    assert lower_bound(n, n, level) >= target
    assert lower_bound(n - 1, n - 1, level) < target
    assert items_needed(0.99, 0.95) == 299
    for wrong in (1, 2):  # with wrong items
        m = items_needed(target, level, wrong)
        assert lower_bound(m - wrong, m, level) >= target > lower_bound(m - 1 - wrong, m - 1, level)


def test_three_sequences_share_the_error_level():
    assert sequence_level(0.95) == pytest.approx(1 - 0.05 / 3)
    # the figures docs/label-quality.md quotes: 0.99 at 95% needs 408 right, or 603 with one wrong, 773 with two
    assert needed_items(0.99, 0.95) == 408
    assert [items_needed(0.99, sequence_level(0.95), w) for w in (1, 2)] == [603, 773]


def _slow_threshold(conf, right, target, level, sequences=3):
    """For 0, 1, 2 wrong items: every distinct confidence from the highest down with enough items above for
    that many wrong ones, each at level 1 - (1 - level) / 3, stop at the first fail; the loosest pass of all."""
    each = 1 - (1 - level) / sequences
    best = (None, 0, 0, None)
    for wrong in range(sequences):
        start = items_needed(target, each, wrong)
        for t in sorted(set(conf.tolist()), reverse=True):
            above = conf >= t
            n, k = int(above.sum()), int(right[above].sum())
            if n < start:
                continue
            bound = lower_bound(k, n, each)
            if bound < target:
                break
            if n > best[1]:
                best = (t, n, k, bound)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_choose_threshold_matches_the_fixed_sequence_done_slowly(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 120))
    conf = np.round(rng.uniform(0.3, 1.0, n), 2)  # ties, as real confidences have
    right = rng.uniform(size=n) < conf ** 0.3
    got = choose_threshold(conf, right, 0.9, 0.9)
    want = _slow_threshold(conf, right, 0.9, 0.9)
    assert got[:3] == want[:3]
    assert (got[3] is None) == (want[3] is None) and (got[3] is None or got[3] == pytest.approx(want[3]))


def test_one_confident_error_ends_the_first_sequence_but_not_the_one_that_starts_where_one_can_pass():
    each = sequence_level(0.9)
    n0, n1 = items_needed(0.9, each), items_needed(0.9, each, 1)
    conf = np.linspace(1.0, 0.5, 300)
    right = np.ones(300, dtype=bool)
    right[5] = False  # a confidently wrong item among the first n0
    threshold, above, correct, bound = choose_threshold(conf, right, 0.9, 0.9)
    assert threshold is not None and above > n1 and correct == above - 1 and bound >= 0.9
    assert choose_threshold(conf, right, 0.9, 0.9, sequences=1)[0] is None  # the plain fixed sequence stops
    right[[5, 6, 7]] = False  # three wrong at the top: none of the three sequences starts where it can pass
    assert choose_threshold(conf[:n0 + 5], right[:n0 + 5], 0.9, 0.9)[0] is None


def test_calibrated_is_softmax_of_beta_times_log_p():
    p = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    beta = 1.7
    want = np.array([[math.exp(beta * math.log(v + 1e-12)) for v in row] for row in p])
    want /= want.sum(axis=1, keepdims=True)
    assert np.allclose(calibrated(p, beta), want)
    assert np.allclose(calibrated(p, 1.0), p, atol=1e-9)


def test_the_temperature_minimises_the_held_out_log_loss():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 4)) * 3
    y = np.array([rng.choice(4, p=np.exp(r / 3) / np.exp(r / 3).sum()) for r in logits])  # true temperature 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    beta = fit_inverse_temperature(probs, y)

    def nll(b: float) -> float:
        return -float(np.log(calibrated(probs, b)[np.arange(len(y)), y]).mean())

    grid = np.exp(np.linspace(-3, 2, 20001))
    best = grid[int(np.argmin([nll(b) for b in grid]))]
    assert beta == pytest.approx(best, rel=1e-3)
    assert beta < 0.6  # overconfident probabilities are softened (true beta 1/3)


def test_too_few_held_out_labels_are_refused_with_how_many_are_needed():
    probs = np.tile([[0.98, 0.02]], (50, 1))
    rule = confident_rule(probs, np.zeros(50, dtype=int), 0.99, 0.95)
    assert rule.threshold is None and rule.needed == 408
    assert "needs at least 408 held-out labels" in rule.reason and "50 held-out labels" in rule.reason
    assert not rule.confident(probs).any()


def test_a_rule_marks_what_is_above_its_threshold_and_round_trips_as_a_dict():
    rng = np.random.default_rng(1)
    n = 900  # 60% sure: 540 right ones above the threshold, more than the 408 that 0.99 needs
    y = rng.integers(0, 3, n)
    sure = rng.uniform(size=n) < 0.6  # 60% of the items get a confident, correct prediction
    guess = np.where(rng.uniform(size=n) < 0.5, y, (y + 1) % 3)  # the unsure half right, half wrong
    probs = np.full((n, 3), 0.2)
    probs[np.arange(n), guess] = 0.6
    probs[sure] = 0.005
    probs[sure, y[sure]] = 0.99
    rule = confident_rule(probs, y, 0.99, 0.95)
    assert rule.threshold is not None and rule.precision == 1.0 and rule.lower_bound >= 0.99
    assert rule.above == int(sure.sum())
    again = ConfidentRule.from_dict(rule.as_dict())
    assert again == rule
    assert np.array_equal(again.confident(probs), sure)


def test_calibration_works_with_fewer_held_out_items_per_class_than_folds():
    # 10 classes x 4 held-out items: scikit-learn's default stratified 5-fold split would refuse them
    y = np.repeat(np.arange(10), 4)
    probs = np.full((40, 10), 0.02)
    probs[np.arange(40), y] = 0.82
    beta = fit_inverse_temperature(probs, y)
    assert beta > 1.0  # all right: sharpened
    rule = confident_rule(probs, y, 0.9, 0.9)
    assert rule.threshold is not None and rule.above == 40
