"""class_balanced against a step-by-step interleaving that recounts every class at every step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strategies import Input, PoolInputs, UnknownStrategyError, build_strategy


def _reference(base_order: list[int], predicted: list[int], labeled: list[int], c: int) -> list[int]:
    """Plain loop: recount labeled + placed items per class, take the next base item of the neediest class."""
    queues = {k: [i for i in base_order if predicted[i] == k] for k in range(c)}
    in_pool = {k: len(queues[k]) for k in range(c)}
    placed: list[int] = []
    while len(placed) < len(base_order):
        def need(k: int) -> tuple[int, int, int]:
            return labeled.count(k) + sum(predicted[i] == k for i in placed), in_pool[k], k
        chosen = min((k for k in range(c) if queues[k]), key=need)
        placed.append(queues[chosen].pop(0))
    return placed


def _random_probs(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    logits = rng.normal(scale=2.0, size=(n, c)) + rng.normal(scale=2.0, size=c)  # unequal class sizes
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 40), c=st.integers(1, 5), n_labeled=st.integers(0, 30),
       base=st.sampled_from(["entropy", "margin", "random"]), with_labels=st.booleans())
def test_order_matches_the_step_by_step_reference(seed, n, c, n_labeled, base, with_labels) -> None:
    rng = np.random.default_rng(seed)
    probs = _random_probs(rng, n, c)
    labeled = rng.integers(0, c, size=n_labeled)
    pool = PoolInputs(probs=probs, labeled_labels=labeled if with_labels else None)
    base_ranking = build_strategy(base, seed=seed).rank(pool)
    ranking = build_strategy("class_balanced", base={"name": base, "params": {"seed": seed}}).rank(pool)
    expected = _reference(base_ranking.order.tolist(), probs.argmax(axis=1).tolist(),
                          labeled.tolist() if with_labels else [], c)
    np.testing.assert_array_equal(ranking.order, expected)
    if base_ranking.scores is not None:
        np.testing.assert_array_equal(ranking.scores, base_ranking.scores)
    assert ranking.info["predicted_per_class"] == np.bincount(probs.argmax(axis=1), minlength=c).tolist()
    assert ranking.info["labeled_per_class"] == (np.bincount(labeled, minlength=c).tolist() if with_labels
                                                 else [0] * c)


def _rare_defect_pool(seed: int = 0) -> tuple[PoolInputs, np.ndarray]:
    """400 items, 4 classes; class 3 is 5% of the pool and always predicted confidently (low entropy)."""
    rng = np.random.default_rng(seed)
    classes = np.concatenate([np.full(20, 3), rng.integers(0, 3, size=380)])
    rng.shuffle(classes)
    own = np.where(classes == 3, 0.94 + 0.05 * rng.random(400), 0.45 + 0.1 * rng.random(400))
    probs = rng.dirichlet(np.full(4, 20.0), size=400)
    probs[np.arange(400), classes] = 0.0
    probs *= ((1 - own) / probs.sum(axis=1))[:, None]
    probs[np.arange(400), classes] = own
    return PoolInputs(probs=probs, labeled_labels=np.repeat(np.arange(4), 5)), classes


def test_rare_class_gets_its_share_of_the_first_batch() -> None:
    pool, classes = _rare_defect_pool()
    assert (np.asarray(pool.probs).argmax(axis=1) == classes).all()
    k, fair_share = 20, 20 // 4
    rare_entropy = int((classes[build_strategy("entropy").rank(pool).top(k)] == 3).sum())
    random_mean = np.mean([(classes[build_strategy("random", seed=s).rank(pool).top(k)] == 3).sum()
                           for s in range(30)])
    balanced = build_strategy("class_balanced", base={"name": "entropy"}).rank(pool)
    rare_balanced = int((classes[balanced.top(k)] == 3).sum())
    assert rare_entropy == 0, "the setting: the base ranks the rare class late"
    assert rare_balanced >= fair_share
    assert rare_balanced > rare_entropy and rare_balanced > random_mean


def test_already_labeled_classes_wait() -> None:
    pool, classes = _rare_defect_pool()
    skewed = PoolInputs(probs=pool.probs, labeled_labels=np.array([0] * 12 + [1, 2, 3]))
    top = classes[build_strategy("class_balanced", base={"name": "entropy"}).rank(skewed).top(37)]
    assert (top[:33] != 0).all(), "class 0 waits until the 3 others have caught up with its 12 labels"
    assert sorted(top[33:]) == [0, 1, 2, 3], "then all four take turns"


@pytest.mark.parametrize("base", ["entropy", "random"])
def test_base_order_is_kept_within_each_class(base, make_pool) -> None:
    pool = make_pool(n=200, c=5)
    predicted = np.asarray(pool.probs).argmax(axis=1)
    base_order = build_strategy(base).rank(pool).order
    order = build_strategy("class_balanced", base={"name": base}).rank(pool).order
    for k in range(5):
        np.testing.assert_array_equal(order[predicted[order] == k], base_order[predicted[base_order] == k])


def test_inputs_come_from_the_base_plus_probabilities() -> None:
    strategy = build_strategy("class_balanced", base={"name": "random"})
    assert strategy.required_inputs() == {Input.PROBS}
    assert Input.LABELED_LABELS in strategy.optional_inputs()
    with pytest.raises(UnknownStrategyError):
        build_strategy("class_balanced", base={"name": "no_such_strategy"})
