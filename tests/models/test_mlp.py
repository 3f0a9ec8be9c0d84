"""The MLP head: an MC-dropout MLP on feature vectors (sklearn's digits as 64-d vectors stand in for an
encoder's embeddings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score

from plugins.models import MODELS, build_model
from plugins.models.artifact import load_artifact, save_artifact
from plugins.specs import StrategySpec
from plugins.strategies import Input, InvalidParamsError, MissingInputError, build_strategy, strategy_for

torch.set_num_threads(1)

FAST = {"epochs": 30, "hidden": 64, "mc_samples": 8}
ALL = frozenset({Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS,
                 Input.LABELED_LABELS, Input.HEAD})
LABELS = [str(d) for d in range(10)]


def even_and_large(digits: np.ndarray) -> np.ndarray:
    """(N, 2) 0/1 targets: the digit is even, the digit is >= 5."""
    return np.stack([digits % 2 == 0, digits >= 5], axis=1).astype(np.uint8)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=axis)


@pytest.fixture(scope="module")
def digits():
    """(train features, train digits, test features, test digits): 500 labels, 797 held out."""
    x, y = load_digits(return_X_y=True)
    return x[:500], y[:500], x[1000:], y[1000:]


@pytest.fixture(scope="module")
def trained(digits):
    x, y, _, _ = digits
    model = build_model("mlp", 10, **FAST)
    log: list[dict] = []
    metrics = model.fit(x, y, progress=log.append)
    return model, metrics, log


@pytest.fixture(scope="module")
def multilabel(digits):
    x, y, _, _ = digits
    model = build_model("mlp", 2, multilabel=True, **FAST)
    model.fit(x, even_and_large(y))
    return model


def test_it_registers_as_a_vector_reader_with_the_documented_defaults():
    cls = MODELS.get("mlp")
    assert cls.reads_vectors and cls.provides == ALL
    p = build_model("mlp", 3).params
    assert (p.hidden, p.dropout, p.mc_samples, p.epochs, p.lr, p.weight_decay, p.batch_size, p.device) == \
        (256, 0.3, 10, 100, 1e-3, 1e-4, 64, None)


def test_it_learns_digits_from_500_labels(trained, digits):
    model, metrics, _ = trained
    _, _, x_test, y_test = digits
    probs = model.predict_proba(x_test)
    assert probs.shape == (len(x_test), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs.argmax(axis=1) == y_test).mean() > 0.9
    assert metrics["labels"] == 500.0 and metrics["train_accuracy"] > 0.97


def test_progress_is_reported_every_ten_epochs_and_at_the_end(digits):
    x, y, _, _ = digits
    log: list[dict] = []
    build_model("mlp", 10, epochs=25, hidden=16).fit(x[:100], y[:100], progress=log.append)
    assert log == [{"phase": "epoch", "epoch": e, "of": 25} for e in (10, 20, 25)]


def test_training_is_deterministic_under_the_seed(digits):
    x, y, x_test, _ = digits
    runs = []
    for seed in (3, 3, 4):
        model = build_model("mlp", 10, seed=seed, epochs=5, hidden=32, mc_samples=4)
        model.fit(x[:200], y[:200])
        runs.append(model.pool_inputs(x_test[:50], frozenset({Input.SAMPLES}), x[:0], y[:0]))
    np.testing.assert_array_equal(runs[0].probs, runs[1].probs)
    np.testing.assert_array_equal(runs[0].samples, runs[1].samples)
    assert np.abs(runs[0].probs - runs[2].probs).max() > 1e-3


def test_mc_samples_differ_between_passes_and_average_near_the_probabilities(trained, digits):
    model, _, _ = trained
    x, y, x_test, _ = digits
    pool = model.pool_inputs(x_test, frozenset({Input.SAMPLES}), x, y)
    assert pool.samples.shape == (len(x_test), 8, 10)
    np.testing.assert_allclose(pool.samples.sum(axis=2), 1.0, atol=1e-5)
    assert pool.samples.std(axis=1).max(axis=1).mean() > 0.005  # the masks change the outputs
    assert not np.array_equal(pool.samples[:, 0], pool.samples[:, 1])
    assert np.abs(pool.samples.mean(axis=1) - pool.probs).mean() < 0.02
    again = model.pool_inputs(x_test, frozenset({Input.SAMPLES}), x, y)
    np.testing.assert_array_equal(again.samples, pool.samples)  # seeded masks
    np.testing.assert_array_equal(pool.probs, model.predict_proba(x_test))  # eval mode: no dropout


def test_embeddings_are_the_hidden_layer_and_the_head_maps_them_to_the_logits(trained, digits):
    model, _, _ = trained
    x, y, x_test, _ = digits
    pool = model.pool_inputs(x_test, frozenset({Input.EMBEDDINGS, Input.HEAD}), x[:30], y[:30])
    assert pool.embeddings.shape == (len(x_test), 64) and pool.labeled_embeddings.shape == (30, 64)
    assert pool.embeddings.min() >= 0.0 and (pool.embeddings == 0).mean() > 0.05  # post-ReLU
    np.testing.assert_array_equal(pool.labeled_labels, y[:30])
    assert pool.n_classes == 10 and not pool.multilabel
    e = torch.tensor(pool.embeddings, dtype=torch.float64, requires_grad=True)
    logits = pool.head(e)
    assert logits.shape == (len(x_test), 10) and logits.dtype == torch.float64
    np.testing.assert_allclose(torch.softmax(logits, 1).detach().numpy(), pool.probs, atol=1e-5)
    logits.sum().backward()  # differentiable, as BADGE and EGL need
    assert e.grad is not None and e.grad.abs().sum() > 0


def test_absent_classes_get_a_tiny_probability_and_one_class_still_gives_probabilities(digits):
    x, y, x_test, y_test = digits
    low = y < 5
    model = build_model("mlp", 10, epochs=20, hidden=32)
    model.fit(x[low], y[low])
    probs = model.predict_proba(x_test)
    assert probs[:, 5:].min() > 0.0 and probs[:, 5:].max() < 1e-6  # as the logistic model's
    model.fit(x, y)  # warm start: the classes it now sees are learned too
    assert (model.predict_proba(x_test).argmax(axis=1) == y_test).mean() > 0.85
    single = build_model("mlp", 10, epochs=5, hidden=16)
    metrics = single.fit(x[y == 3], y[y == 3])
    probs = single.predict_proba(x_test)
    assert metrics["train_accuracy"] == 1.0 and (probs.argmax(axis=1) == 3).all()
    assert np.isfinite(probs).all() and probs.min() > 0.0
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)


def test_warm_start_continues_from_the_current_weights(trained, digits):
    model, _, _ = trained
    x, y, x_test, y_test = digits
    twin = build_model("mlp", 10, **{**FAST, "epochs": 1, "lr": 1e-9})
    twin.load_state_dict(model.state_dict())
    # new data with other feature statistics: the restandardized net computes the same function
    twin.fit(x_test[:100] * 2.0 + 1.0, y_test[:100])
    np.testing.assert_allclose(twin.predict_proba(x_test), model.predict_proba(x_test), atol=1e-4)
    assert not np.array_equal(twin.mean, model.mean)
    cold = build_model("mlp", 10, **{**FAST, "epochs": 1, "lr": 1e-9})
    cold.fit(x, y)
    assert (cold.predict_proba(x_test).argmax(axis=1) == y_test).mean() < 0.5


def test_multilabel_gives_per_label_sigmoids_that_predict_the_targets(multilabel, digits):
    x, y, x_test, y_test = digits
    targets = even_and_large(y_test)
    probs = multilabel.predict_proba(x_test)
    assert probs.shape == (len(x_test), 2) and probs.min() >= 0.0 and probs.max() <= 1.0
    assert np.abs(probs.sum(axis=1) - 1.0).max() > 0.5  # independent sigmoids, not a softmax
    assert f1_score(targets, (probs >= 0.5).astype(int), average="micro") > 0.85
    pool = multilabel.pool_inputs(x_test, ALL, x[:40], even_and_large(y[:40]))
    assert pool.multilabel and pool.labeled_labels.shape == (40, 2) and pool.labeled_labels.dtype == np.uint8
    assert pool.samples.shape == (len(x_test), 8, 2)
    assert 0.0 <= pool.samples.min() <= pool.samples.max() <= 1.0
    logits = pool.head(torch.as_tensor(pool.embeddings))
    np.testing.assert_allclose(torch.sigmoid(logits).numpy(), probs, atol=1e-5)
    ranking = build_strategy("bald").rank(pool)
    assert sorted(ranking.order.tolist()) == list(range(len(x_test)))


@pytest.mark.parametrize("which", ["single", "multi"])
def test_artifact_round_trip_gives_identical_predictions(which, trained, multilabel, digits, tmp_path):
    model = trained[0] if which == "single" else multilabel
    labels = LABELS if which == "single" else ["even", "large"]
    x, y, x_test, _ = digits
    path = save_artifact(tmp_path / "v1.pt", model, label_map=labels, metrics={})
    loaded = load_artifact(path).model
    assert loaded.config() == model.config()
    np.testing.assert_array_equal(loaded.predict_proba(x_test), model.predict_proba(x_test))
    a = model.pool_inputs(x_test, frozenset({Input.SAMPLES, Input.EMBEDDINGS}), x[:10], y[:10])
    b = loaded.pool_inputs(x_test, frozenset({Input.SAMPLES, Input.EMBEDDINGS}), x[:10], y[:10])
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    flipped = build_model("mlp", model.n_classes, **{**FAST, "multilabel": which == "single"})
    with pytest.raises(InvalidParamsError, match="multilabel"):
        flipped.load_state_dict(model.state_dict())
    narrower = build_model("mlp", model.n_classes, **{**FAST, "hidden": 32, "multilabel": which == "multi"})
    with pytest.raises(InvalidParamsError, match="hidden=64 but the params say 32"):
        narrower.load_state_dict(model.state_dict())


def test_bad_inputs_and_params_are_refused_with_the_reason(digits):
    x, y, _, _ = digits
    model = build_model("mlp", 10, epochs=1, hidden=8)
    with pytest.raises(RuntimeError, match="the model is not trained yet"):
        model.predict_proba(x[:3])
    with pytest.raises(RuntimeError, match="the model is not trained yet"):
        model.pool_inputs(x[:3], frozenset({Input.PROBS}), x[:0], y[:0])
    with pytest.raises(InvalidParamsError, match="expected 20 labels"):
        model.fit(x[:20], y[:19])
    with pytest.raises(InvalidParamsError, match=r"targets of shape \(20, 2\)"):
        build_model("mlp", 2, multilabel=True).fit(x[:20], y[:20])
    with pytest.raises(InvalidParamsError, match="augmentation does not apply"):
        model.fit(x[:20], y[:20], augment=lambda img, label, rng: img)
    with pytest.raises(InvalidParamsError, match="dropout"):
        build_model("mlp", 10, dropout=0.95)
    with pytest.raises(InvalidParamsError, match="empty labeled set"):
        model.fit(x[:0], y[:0])


@pytest.mark.parametrize("params, words", [({"dropout": 0.0}, "dropout=0"),
                                           ({"mc_samples": 1}, "mc_samples=1")])
def test_samples_that_cannot_disagree_are_refused(params, words, digits):
    x, y, _, _ = digits
    model = build_model("mlp", 10, epochs=2, hidden=8, **params)
    model.fit(x[:50], y[:50])
    needs = build_strategy("bald").required_inputs()
    assert Input.SAMPLES in model.unsupported(needs) and words in model.sample_problem()
    with pytest.raises(MissingInputError, match=words):
        model.pool_inputs(x[50:60], needs, x[:50], y[:50])
    assert model.pool_inputs(x[50:60], frozenset({Input.PROBS}), x[:50], y[:50]).probs.shape == (10, 10)


def test_an_empty_labeled_set_and_an_empty_pool_are_served(trained, digits):
    model, _, _ = trained
    x, y, _, _ = digits
    pool = model.pool_inputs(x[:5], ALL, x[:0], y[:0])
    assert pool.embeddings.shape == (5, 64) and pool.labeled_embeddings.shape == (0, 64)
    empty = model.pool_inputs(x[:0], ALL, x[:5], y[:5])
    assert empty.probs.shape == (0, 10) and empty.samples.shape == (0, 8, 10)
    assert empty.embeddings.shape == (0, 64)


def test_bald_ranks_by_the_mutual_information_of_the_mc_samples(trained, digits):
    model, _, _ = trained
    x, y, x_test, _ = digits
    strategy = strategy_for(StrategySpec(name="bald"), batch=20, seed=0)
    needs = strategy.required_inputs() | (strategy.optional_inputs() & model.provides)
    assert strategy.required_inputs() <= model.provides
    pool = model.pool_inputs(x_test, needs, x, y)
    ranking = strategy.rank(pool)
    s = pool.samples.astype(np.float64)
    mutual_information = entropy(s.mean(axis=1)) - entropy(s).mean(axis=1)
    np.testing.assert_allclose(ranking.scores, mutual_information, atol=1e-4)
    assert mutual_information[ranking.order[:20]].min() >= np.sort(mutual_information)[-20] - 1e-4


def test_badge_picks_a_diverse_batch_from_the_hidden_embeddings_and_head(trained, digits):
    model, _, _ = trained
    x, y, x_test, _ = digits
    strategy = strategy_for(StrategySpec(name="badge"), batch=20, seed=0)
    needs = strategy.required_inputs() | (strategy.optional_inputs() & model.provides)
    assert Input.HEAD in needs or Input.EMBEDDINGS in needs
    pool = model.pool_inputs(x_test, needs, x, y)
    ranking = strategy.rank(pool)
    assert sorted(ranking.order.tolist()) == list(range(len(x_test)))
    batch = ranking.order[:20]
    assert len(np.unique(pool.probs[batch].argmax(axis=1))) >= 6  # spread over the predicted classes
    margin = np.sort(pool.probs, axis=1)
    margin = margin[:, -1] - margin[:, -2]
    assert margin[batch].mean() < margin.mean()  # and drawn towards the uncertain items
