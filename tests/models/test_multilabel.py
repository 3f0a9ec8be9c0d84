"""Multi-label models: independent per-label sigmoids trained with BCE on (N, C) 0/1 targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score

from plugins.models import build_model
from plugins.models.artifact import load_artifact, save_artifact
from plugins.models.base import label_strata
from plugins.models.training import TrainConfig, pos_weights
from plugins.strategies import Input, InvalidParamsError, build_strategy

LABELS = ["even", "greater than 4", "has a loop", "prime"]
TINY_TRAIN = {"epochs": 4, "min_epoch_items": 512, "batch_size": 64, "lr": 3e-3}
MODELS = {
    "logistic": {"committee": 3, "max_iter": 200, "c": 0.5},
    "cnn": {"image_size": 8, "mc_samples": 5, "train": TINY_TRAIN},
    "ensemble": {"image_size": 8, "members": 2, "train": {**TINY_TRAIN, "epochs": 3}},
}


def digit_targets(digits: np.ndarray) -> np.ndarray:
    """(N, 4) 0/1 targets: even, greater than 4, has a closed loop (0, 6, 8, 9), prime (2, 3, 5, 7)."""
    d = np.asarray(digits)
    return np.stack([d % 2 == 0, d > 4, np.isin(d, (0, 6, 8, 9)), np.isin(d, (2, 3, 5, 7))],
                    axis=1).astype(np.uint8)


@pytest.fixture(scope="module")
def digits():
    """(train images, train targets, test images, test targets): 8x8 digits scaled to [0, 1]."""
    images, classes = load_digits(return_X_y=True)
    images = (images / 16.0).reshape(-1, 8, 8)
    y = digit_targets(classes)
    return images[:600], y[:600], images[1200:1500], y[1200:1500]


@pytest.fixture(scope="module")
def fitted(digits):
    """Each model fitted once on the multi-label digits."""
    x, y, _, _ = digits
    models = {}
    for name, params in MODELS.items():
        model = build_model(name, len(LABELS), multilabel=True, **params)
        model.fit(x, y)
        models[name] = model
    return models


def trivial_micro_f1(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """The better of two input-free predictors: each label's majority value, or every label ticked."""
    majority = np.broadcast_to(y_train.mean(axis=0) >= 0.5, y_test.shape).astype(int)
    every = np.ones_like(y_test)
    return max(f1_score(y_test, p, average="micro", zero_division=0) for p in (majority, every))


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_beats_a_trivial_baseline_on_held_out_micro_f1(name, fitted, digits):
    x, y, x_test, y_test = digits
    predicted = (fitted[name].predict_proba(x_test) >= 0.5).astype(int)
    micro = f1_score(y_test, predicted, average="micro")
    baseline = trivial_micro_f1(y, y_test)
    assert micro > baseline + 0.15, (micro, baseline)


@pytest.mark.parametrize("name", list(MODELS))
def test_probabilities_are_independent_per_label(name, fitted, digits):
    x, y, x_test, _ = digits
    model = fitted[name]
    probs = model.predict_proba(x_test)
    assert probs.shape == (len(x_test), len(LABELS))
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    assert np.abs(probs.sum(axis=1) - 1.0).max() > 0.5  # sigmoids, not a softmax: rows need not sum to 1
    pool = model.pool_inputs(x_test, frozenset({Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS}), x[:20], y[:20])
    assert pool.multilabel and pool.labeled_labels.shape == (20, len(LABELS))
    np.testing.assert_allclose(pool.probs, probs, rtol=1e-5, atol=1e-6)
    assert pool.samples.shape[::2] == (len(x_test), len(LABELS))
    assert pool.samples.min() >= 0.0 and pool.samples.max() <= 1.0
    assert np.abs(pool.samples.sum(axis=2) - 1.0).max() > 0.5
    ranking = build_strategy("bald").rank(pool)  # the validation of multi-label inputs accepts them
    assert sorted(ranking.order.tolist()) == list(range(len(x_test)))


@pytest.mark.parametrize("name", list(MODELS))
def test_artifact_round_trip_gives_identical_probabilities(name, fitted, digits, tmp_path):
    x, y, x_test, _ = digits
    model = fitted[name]
    path = save_artifact(tmp_path / "v1.pt", model, label_map=LABELS, metrics={})
    loaded = load_artifact(path).model
    assert loaded.config() == model.config() and loaded.config()["params"]["multilabel"] is True
    np.testing.assert_array_equal(loaded.predict_proba(x_test), model.predict_proba(x_test))
    twin = build_model(name, len(LABELS), **{**MODELS[name], "multilabel": False})
    with pytest.raises(InvalidParamsError, match="multilabel"):
        twin.load_state_dict(model.state_dict())  # a single-label twin refuses multi-label weights


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("bad, words", [
    (lambda y: y.argmax(axis=1), "shape"),
    (lambda y: y[:, :3], "shape"),
    (lambda y: y * 2, "0 or 1"),
    (lambda y: y[:-1], "shape"),
])
def test_targets_of_the_wrong_form_are_refused(name, bad, words, digits):
    x, y, _, _ = digits
    model = build_model(name, len(LABELS), multilabel=True, **MODELS[name])
    with pytest.raises(InvalidParamsError, match=words):
        model.fit(x[:40], bad(y[:40]))


@pytest.mark.parametrize("name", ["logistic", "cnn"])
def test_single_label_models_are_unaffected(name, digits):
    images, classes = load_digits(return_X_y=True)
    x = (images / 16.0).reshape(-1, 8, 8)
    model = build_model(name, 10, **MODELS[name])
    assert model.params.multilabel is False and model.config()["params"]["multilabel"] is False
    model.fit(x[:300], classes[:300])
    probs = model.predict_proba(x[1200:1300])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs.argmax(axis=1) == classes[1200:1300]).mean() > 0.5
    pool = model.pool_inputs(x[1200:1300], frozenset({Input.PROBS}), x[:10], classes[:10])
    assert not pool.multilabel and pool.labeled_labels.shape == (10,)
    with pytest.raises(InvalidParamsError):
        model.fit(x[:40], digit_targets(classes[:40]))  # (N, C) targets for a single-label model


def test_logistic_label_with_one_value_gets_a_constant_probability_near_0_or_1(digits):
    x, y, x_test, _ = digits
    y = y.copy()
    y[:, 1], y[:, 2] = 0, 1  # label 1 never seen positive, label 2 never negative
    model = build_model("logistic", len(LABELS), multilabel=True, **MODELS["logistic"])
    model.fit(x, y)
    probs = model.predict_proba(x_test)
    assert np.ptp(probs[:, 1]) == 0 and 0 < probs[0, 1] < 0.01
    assert np.ptp(probs[:, 2]) == 0 and 0.99 < probs[0, 2] < 1
    assert np.ptp(probs[:, 0]) > 0.5  # the other labels are still learned
    samples = model.pool_inputs(x_test, frozenset({Input.SAMPLES}), x[:5], y[:5]).samples
    assert np.isfinite(samples).all() and samples.shape == (len(x_test), 3, len(LABELS))


def test_logistic_head_gives_the_per_label_logits(fitted, digits):
    x, y, x_test, _ = digits
    model = fitted["logistic"]
    pool = model.pool_inputs(x_test, frozenset({Input.HEAD, Input.EMBEDDINGS}), x[:10], y[:10])
    logits = pool.head(torch.as_tensor(pool.embeddings)).numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), model.predict_proba(x_test), rtol=1e-10)


def test_cnn_early_stopping_on_a_held_out_split_works_with_bce(digits):
    x, y, _, _ = digits
    train = {**TINY_TRAIN, "val_fraction": 0.2, "min_held_out": 20, "epochs": 3}
    model = build_model("cnn", len(LABELS), multilabel=True, image_size=8, train=train)
    metrics = model.fit(x[:300], y[:300])
    assert metrics["held_out"] == 60
    assert 0.5 < metrics["val_accuracy"] <= 1.0 and np.isfinite(metrics["val_loss"]) and metrics["val_loss"] > 0
    assert 1 <= metrics["best_epoch"] <= 3


def test_cnn_learning_loss_predicts_the_multilabel_loss(digits):
    x, y, x_test, _ = digits
    model = build_model("cnn", len(LABELS), multilabel=True, image_size=8, learning_loss=True,
                        train={**TINY_TRAIN, "epochs": 2})
    model.fit(x[:300], y[:300])
    pool = model.pool_inputs(x_test, frozenset({Input.PREDICTED_LOSS}), x[:5], y[:5])
    assert pool.predicted_loss.shape == (len(x_test),) and np.isfinite(pool.predicted_loss).all()
    assert build_strategy("learning_loss").rank(pool).order.shape == (len(x_test),)


def test_mc_samples_are_per_label_sigmoids_of_dropout_masks(fitted, digits):
    _, _, x_test, _ = digits
    model = fitted["cnn"]
    out = model.forward_pass(x_test[:50], samples=True, embeddings=True)
    net = model.net
    h = torch.as_tensor(out["embeddings"])
    with torch.no_grad():
        logits = net.mc_head_logits(h, model.params.mc_samples,
                                    torch.Generator().manual_seed(model.params.seed)).transpose(0, 1)
    np.testing.assert_allclose(out["samples"], torch.sigmoid(logits).numpy(), rtol=1e-5, atol=1e-6)


def test_pos_weights_are_negatives_over_positives_clipped():
    y = np.zeros((100, 4), dtype=np.uint8)
    y[:25, 0] = 1  # 75 / 25 = 3
    y[:1, 1] = 1  # 99 / 1, clipped to 10
    y[:, 2] = 1  # all positive: nothing to balance
    y[:95, 3] = 1  # 5 / 95, clipped to 0.1
    expected = []
    for label in range(4):
        pos = int(y[:, label].sum())
        neg = len(y) - pos
        expected.append(1.0 if pos in (0, len(y)) else min(10.0, max(0.1, neg / pos)))
    np.testing.assert_allclose(pos_weights(y), expected)
    assert TrainConfig().class_balanced


def test_label_strata_are_the_rarest_positive_label_or_none():
    y = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0], [1, 0, 0], [0, 1, 1]])
    counts = y.sum(axis=0)
    expected = []
    for row in y:
        positives = [c for c in range(3) if row[c]]
        expected.append(min(positives, key=lambda c: (counts[c], c)) if positives else 3)
    assert label_strata(y).tolist() == expected
