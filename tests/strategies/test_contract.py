"""The contract every registered strategy must honour (a new strategy gets these tests for free)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import pytest

from plugins.boxes import BoxEvidence
from plugins.strategies import (
    STRATEGIES,
    Input,
    InvalidInputError,
    InvalidParamsError,
    MissingInputError,
    PoolInputs,
    build_strategy,
)

ALL = STRATEGIES.names()
FLOAT_INPUTS = [Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS, Input.PREDICTED_LOSS,
                Input.BOX_SAMPLES, Input.BOX_IOU]


@pytest.fixture
def make_pool(make_pool, box_inputs):
    """The shared pools with detector evidence over the same images beside them (for the box strategies)."""

    def build(**kwargs) -> PoolInputs:
        pool = make_pool(**kwargs)
        boxes = box_inputs(n=pool.n, c=pool.num_classes, seed=kwargs.get("seed", 0))
        return dataclasses.replace(pool, **boxes)

    return build


def _assert_permutation(order: np.ndarray, n: int) -> None:
    assert order.dtype == np.int64
    assert order.shape == (n,)
    assert np.array_equal(np.sort(order), np.arange(n)), "order must be a permutation: no duplicates, no gaps"


def _small_batch(name: str) -> dict:
    return {"batch_size": 7} if "batch_size" in STRATEGIES.get(name).Params.model_fields else {}


def test_registry_has_every_strategy_of_the_seeds() -> None:
    expected = {
        "random", "least_confidence", "margin", "entropy", "mc_variance", "bald", "batchbald",
        "vote_entropy", "kl_consensus", "coreset", "typiclust", "probcover", "badge", "egl",
        "expected_error_reduction", "alfamix", "learning_loss", "stochastic", "class_balanced", "auto",
    }
    assert expected <= set(ALL), f"missing: {sorted(expected - set(ALL))}"


@pytest.mark.parametrize("name", ALL)
def test_valid_permutation_and_scores(name, make_pool) -> None:
    pool = make_pool()
    ranking = build_strategy(name, **_small_batch(name)).rank(pool)
    _assert_permutation(ranking.order, pool.n)
    assert ranking.strategy == name
    if ranking.scores is not None:
        assert ranking.scores.shape == (pool.n,)
        assert np.isfinite(ranking.scores).all()
    if ranking.clusters is not None:
        assert ranking.clusters.shape == (pool.n,)


@pytest.mark.parametrize("name", ALL)
def test_deterministic_under_a_seed(name, make_pool) -> None:
    pool = make_pool(seed=3)
    a = build_strategy(name, seed=11, **_small_batch(name)).rank(pool)
    b = build_strategy(name, seed=11, **_small_batch(name)).rank(pool)
    np.testing.assert_array_equal(a.order, b.order)


@pytest.mark.parametrize("name", ALL)
def test_pool_smaller_than_batch(name, make_pool) -> None:
    pool = make_pool(n=5)
    strategy = build_strategy(name, **({"batch_size": 50} if _small_batch(name) else {}))
    _assert_permutation(strategy.rank(pool).order, 5)


@pytest.mark.parametrize("name", ALL)
def test_single_item_pool(name, make_pool) -> None:
    _assert_permutation(build_strategy(name).rank(make_pool(n=1)).order, 1)


@pytest.mark.parametrize("name", ALL)
def test_empty_pool(name, make_pool) -> None:
    full = make_pool(n=10)
    empty = dataclasses.replace(
        full, probs=full.probs[:0], samples=full.samples[:0], embeddings=full.embeddings[:0],
        predicted_loss=full.predicted_loss[:0], box_samples=full.box_samples[:0], box_iou=full.box_iou[:0],
        boxes=BoxEvidence(0, full.boxes.image[:0], full.boxes.probs[:0]),
    )
    ranking = build_strategy(name).rank(empty)
    assert ranking.order.shape == (0,)


@pytest.mark.parametrize("name", ALL)
def test_one_class(name, make_pool) -> None:
    pool = make_pool(c=1, n=30)
    _assert_permutation(build_strategy(name, **_small_batch(name)).rank(pool).order, 30)


@pytest.mark.parametrize("name", ALL)
def test_non_finite_input_is_a_clear_error(name, make_pool) -> None:
    strategy = build_strategy(name, **_small_batch(name))
    needed = [i for i in FLOAT_INPUTS if i in strategy.required_inputs()]
    if not needed:
        pytest.skip(f"{name} reads no float input")
    for inp in needed:
        for bad in (np.nan, np.inf):
            pool = make_pool(n=20)
            array = np.array(getattr(pool, inp.value), dtype=np.float64)
            array.flat[3] = bad
            with pytest.raises(InvalidInputError, match=inp.value):
                strategy.rank(dataclasses.replace(pool, **{inp.value: array}))


@pytest.mark.parametrize("name", ALL)
def test_malformed_box_evidence_is_a_clear_error(name, make_pool) -> None:
    strategy = build_strategy(name, **_small_batch(name))
    if Input.BOXES not in strategy.required_inputs():
        pytest.skip(f"{name} reads no boxes")
    pool = make_pool(n=20)
    boxes = pool.boxes
    probs = np.array(boxes.probs)
    probs[0, 0] = np.nan
    unsorted = boxes.image[::-1].copy()
    for bad in (BoxEvidence(20, boxes.image, probs), BoxEvidence(20, unsorted, boxes.probs),
                BoxEvidence(20, boxes.image, boxes.probs * 2), BoxEvidence(20, boxes.image[1:], boxes.probs),
                probs):
        with pytest.raises(InvalidInputError, match="boxes"):
            strategy.rank(dataclasses.replace(pool, boxes=bad))


@pytest.mark.parametrize("name", ALL)
def test_missing_input_is_a_clear_error(name, make_pool) -> None:
    strategy = build_strategy(name)
    needed = strategy.required_inputs()
    if not needed:
        pytest.skip(f"{name} needs no input")
    pool = make_pool(n=20)
    first = sorted(needed, key=lambda i: i.value)[0]
    with pytest.raises(MissingInputError, match=first.value):
        strategy.rank(dataclasses.replace(pool, **{first.value: None}, n_items=20))


@pytest.mark.parametrize("name", ALL)
def test_config_round_trip(name, make_pool) -> None:
    pool = make_pool(n=40)
    strategy = build_strategy(name, seed=5, **_small_batch(name))
    rebuilt = build_strategy(strategy.config())
    assert rebuilt.config() == strategy.config()
    np.testing.assert_array_equal(rebuilt.rank(pool).order, strategy.rank(pool).order)


@pytest.mark.parametrize("name", ALL)
def test_unknown_parameter_lists_what_is_allowed(name) -> None:
    with pytest.raises(InvalidParamsError, match="Allowed: .*seed"):
        build_strategy(name, no_such_parameter=1)


def test_probabilities_that_are_logits_are_rejected(make_pool) -> None:
    pool = make_pool(n=10)
    with pytest.raises(InvalidInputError, match="softmax"):
        build_strategy("entropy").rank(dataclasses.replace(pool, probs=np.asarray(pool.probs) * 3))


def test_inconsistent_pool_sizes_are_rejected(make_pool) -> None:
    pool = make_pool(n=10)
    with pytest.raises(InvalidInputError, match="pool size"):
        build_strategy("badge").rank(dataclasses.replace(pool, embeddings=np.asarray(pool.embeddings)[:5]))


def test_inputs_a_strategy_does_not_read_are_neither_converted_nor_checked(make_pool) -> None:
    pool = make_pool(n=10)
    broken = np.asarray(pool.samples).copy()
    broken[0, 0, 0] = np.nan  # entropy never reads samples: no error, and no cost on large pools
    ranking = build_strategy("entropy").rank(dataclasses.replace(pool, samples=broken))
    assert sorted(ranking.order) == list(range(10))


def test_random_needs_only_the_pool_size() -> None:
    ranking = build_strategy("random", seed=1).rank(PoolInputs(n_items=50))
    _assert_permutation(ranking.order, 50)
    assert not np.array_equal(ranking.order, build_strategy("random", seed=2).rank(PoolInputs(n_items=50)).order)


def test_a_wrapper_computes_in_its_childs_precision(make_pool) -> None:
    pool = make_pool(n=50)
    wrapped = build_strategy("class_balanced", dtype="float32",
                             base={"name": "entropy", "params": {"dtype": "float64"}})
    assert wrapped.dtype == torch.float64
    exact = build_strategy("entropy", dtype="float64").rank(pool).scores
    np.testing.assert_array_equal(wrapped.rank(pool).scores, exact)  # no float32 round trip in between
