"""The 'ensemble' model plugin: M members from different seeds, their probabilities as samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugins.models import MODELS, build_model
from plugins.models.ensemble import DeepEnsemble
from plugins.strategies import Input, InvalidParamsError, build_strategy

torch.set_num_threads(1)


def _toy(n: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) uint8 images: a bright square top-left (class 0) or bottom-right (class 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, size, size))
    q = size // 2
    for i, label in enumerate(y):
        x[i, label * q:(label + 1) * q, label * q:(label + 1) * q] += 150
    return x.astype(np.uint8), y


def _ensemble(members: int = 3, **params) -> DeepEnsemble:
    settings = {"image_size": 8, "members": members,
                "train": {"epochs": 2, "batch_size": 16, "val_fraction": 0}}
    return build_model("ensemble", 2, **(settings | params))


@pytest.fixture(scope="module")
def trained() -> tuple[DeepEnsemble, np.ndarray, np.ndarray, list[dict]]:
    x, y = _toy(40, seed=0)
    model = _ensemble()
    log: list[dict] = []
    model.fit(x, y, progress=log.append)
    return model, x, y, log


def test_samples_are_the_members_probabilities_and_probs_their_mean(trained) -> None:
    model, x, y, _ = trained
    inputs = model.pool_inputs(x[:10], frozenset({Input.SAMPLES}), x, y)
    assert inputs.samples.shape == (10, 3, 2)
    for m, member in enumerate(model.members):
        np.testing.assert_allclose(inputs.samples[:, m], member.predict_proba(x[:10]), atol=1e-6)
    np.testing.assert_allclose(inputs.probs, inputs.samples.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(x[:10]), inputs.probs, atol=1e-6)
    # members differ (their predictions may all saturate on this easy toy set, their weights do not)
    first, second = (m.state_dict() for m in model.members[:2])
    assert any(not torch.equal(first[k], second[k]) for k in first if isinstance(first[k], torch.Tensor))


def test_members_have_different_seeds_and_weights(trained) -> None:
    model, *_ = trained
    assert [m.params.seed for m in model.members] == [0, 1, 2]
    w = [m.net.head.weight for m in model.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])


def test_embeddings_and_head_come_from_member_zero(trained) -> None:
    model, x, y, _ = trained
    needs = frozenset({Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS, Input.HEAD})
    inputs = model.pool_inputs(x[:5], needs, x, y)
    member = model.members[0].forward_pass(x[:5], embeddings=True)
    np.testing.assert_allclose(inputs.embeddings, member["embeddings"], atol=1e-6)
    assert inputs.labeled_embeddings.shape == (40, 128) and inputs.samples is None
    logits = inputs.head(torch.as_tensor(inputs.embeddings))
    np.testing.assert_allclose(torch.softmax(logits, 1).detach().numpy(), member["probs"], atol=1e-5)


def test_progress_names_the_member(trained) -> None:
    *_, log = trained
    assert [(r["member"], r["epoch"]) for r in log] == [(m, e) for m in range(3) for e in (1, 2)]
    assert {r["members"] for r in log} == {3}


def test_a_committee_strategy_ranks_the_ensemble_samples(trained) -> None:
    model, x, y, _ = trained
    strategy = build_strategy("bald")
    needs = strategy.required_inputs()
    assert needs <= model.provides
    ranking = strategy.rank(model.pool_inputs(x, needs, x, y))
    assert sorted(ranking.order.tolist()) == list(range(40))


def test_state_dict_round_trip_and_member_count_check(trained) -> None:
    model, x, _, _ = trained
    twin = MODELS.get("ensemble")(2, **model.config()["params"])
    twin.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(twin.predict_proba(x), model.predict_proba(x))
    with pytest.raises(InvalidParamsError, match="3 members but the params say 2"):
        _ensemble(members=2).load_state_dict(model.state_dict())


def test_one_member_is_not_an_ensemble() -> None:
    with pytest.raises(InvalidParamsError, match="members"):
        _ensemble(members=1)
