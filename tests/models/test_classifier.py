"""The 'cnn' model plugin: preprocessing, one-pass pool inputs, warm start, pretrained weights, state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plugins.models import build_model
from plugins.models.classifier import ImageClassifier, prepare_images
from plugins.models.networks import SmallCNN
from plugins.strategies import STRATEGIES, Input, InvalidParamsError, MissingInputError, build_strategy

torch.set_num_threads(1)

FAST = {"epochs": 3, "batch_size": 16, "val_fraction": 0.0}


def _toy(n: int, seed: int, size: int = 8, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size) uint8 gray images: a bright square in a class-specific quadrant, on noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.integers(0, 60, (n, size, size))
    q = size // 2
    corners = [(0, 0), (q, q), (0, q)]
    for i, label in enumerate(y):
        r, c = corners[label]
        x[i, r:r + q, c:c + q] += 150
    return x.astype(np.uint8), y


def _model(**params) -> ImageClassifier:
    settings = {"image_size": 8, "train": FAST, "mc_samples": 6} | params
    return build_model("cnn", 3, **settings)


def _count_backbone_calls(model: ImageClassifier) -> list[int]:
    calls = [0]
    model.net.backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# -- preprocessing ------------------------------------------------------------------------------------------

def test_prepare_images_accepts_arrays_floats_and_ragged_lists() -> None:
    gray = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    assert prepare_images(gray, 4, 1).shape == (2, 4, 4, 1)
    np.testing.assert_array_equal(prepare_images(gray / 255.0, 4, 1)[..., 0], gray)
    rgb = prepare_images(gray, 4, 3)
    assert rgb.shape == (2, 4, 4, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    ragged = [np.zeros((10, 6, 3), np.uint8), np.full((3, 5), 255, np.uint8), np.zeros((7, 7, 4), np.uint8)]
    out = prepare_images(ragged, 8, 1)
    assert out.shape == (3, 8, 8, 1) and out.dtype == np.uint8
    assert (out[1] == 255).all() and (out[0] == 0).all()


def test_rgb_to_gray_uses_luma_weights() -> None:
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 200
    assert prepare_images(red, 2, 1)[0, 0, 0, 0] == round(0.299 * 200)


@pytest.mark.parametrize(("images", "message"), [
    (np.full((2, 4, 4), 2.0), "float images must be finite and lie in"),
    (np.full((2, 4, 4), 300, np.int64), "integer images must lie in 0..255"),
    (np.zeros((2, 16)), "expected images as an"),
    (np.zeros((2, 4, 4, 2), np.uint8), "1, 3 or 4 channels"),
])
def test_bad_images_are_rejected_with_the_reason(images: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidParamsError, match=message):
        prepare_images(images, 4, 1)


def test_params_are_validated() -> None:
    with pytest.raises(InvalidParamsError, match="unknown architecture 'resnet7'"):
        build_model("cnn", 3, arch="resnet7")
    with pytest.raises(InvalidParamsError, match="dropout"):
        build_model("cnn", 3, dropout=1.5)
    with pytest.raises(InvalidParamsError, match="epocs"):
        build_model("cnn", 3, train={"epocs": 3})


# -- training and the pool pass ------------------------------------------------------------------------

def test_fit_reaches_high_accuracy_and_reports_progress() -> None:
    x, y = _toy(150, seed=0)
    model = _model(train=FAST | {"epochs": 6, "val_fraction": 0.1, "min_held_out": 10, "patience": 10})
    log: list[dict] = []
    metrics = model.fit(x, y, progress=log.append)
    x_test, y_test = _toy(100, seed=1)
    assert (model.predict_proba(x_test).argmax(axis=1) == y_test).mean() > 0.9
    assert metrics["labels"] == 150 and metrics["held_out"] == 15
    assert len(log) == metrics["epochs_run"] and log[0]["phase"] == "train"
    json.dumps(log)  # fit's progress goes into an RQ job's meta


def test_mc_samples_cost_one_backbone_pass_and_come_from_the_head() -> None:
    x, y = _toy(40, seed=0)
    model = _model(mc_samples=9)
    model.fit(x, y)
    calls = _count_backbone_calls(model)
    inputs = model.pool_inputs(x[:20], frozenset({Input.SAMPLES}), x, y)
    assert calls[0] == 1  # 20 items, one batch, 9 samples: one backbone pass
    assert inputs.samples.shape == (20, 9, 3)
    assert (inputs.samples.std(axis=1) > 1e-5).any()
    assert np.abs(inputs.samples.mean(axis=1) - inputs.probs).mean() < 0.1


def test_without_dropout_the_samples_equal_the_probabilities() -> None:
    x, y = _toy(40, seed=0)
    model = _model(dropout=0.0)
    model.fit(x, y)
    inputs = model.pool_inputs(x, frozenset({Input.SAMPLES}), x, y)
    np.testing.assert_allclose(inputs.samples, np.repeat(inputs.probs[:, None], 6, axis=1), atol=1e-6)


def test_pool_inputs_computes_only_what_is_asked() -> None:
    x, y = _toy(40, seed=0)
    model = _model(eval_batch_size=16)
    model.fit(x, y)
    calls = _count_backbone_calls(model)
    inputs = model.pool_inputs(x[:30], frozenset({Input.PROBS}), x, y)
    assert calls[0] == 2  # two pool batches, no labeled pass
    assert inputs.available() == {Input.PROBS, Input.LABELED_LABELS}
    calls[0] = 0
    needs = frozenset({Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS, Input.HEAD})
    inputs = model.pool_inputs(x[:30], needs, x, y)
    assert calls[0] == 2 + 3  # the pool, then the 40 labeled items
    assert inputs.embeddings.shape == (30, 128) and inputs.labeled_embeddings.shape == (40, 128)
    assert inputs.samples is None
    logits = inputs.head(torch.as_tensor(inputs.embeddings, dtype=torch.float64))
    assert logits.dtype == torch.float64
    np.testing.assert_allclose(torch.softmax(logits, 1).detach().numpy(), inputs.probs, atol=1e-5)
    with pytest.raises(MissingInputError, match="learning_loss=true"):
        model.pool_inputs(x, frozenset({Input.PREDICTED_LOSS}), x, y)


def test_an_empty_pool_gives_empty_inputs() -> None:
    x, y = _toy(20, seed=0)
    model = _model()
    model.fit(x, y)
    inputs = model.pool_inputs(x[:0], frozenset({Input.SAMPLES, Input.EMBEDDINGS}), x, y)
    assert inputs.probs.shape == (0, 3) and inputs.samples.shape == (0, 6, 3)
    assert inputs.embeddings.shape == (0, 128)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    x, y = _toy(40, seed=0)
    states = []
    for seed in (0, 0, 1):
        model = _model(seed=seed)
        model.fit(x, y)
        states.append(model.state_dict())
    tensors = [k for k, v in states[0].items() if isinstance(v, torch.Tensor)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in tensors)
    assert not torch.equal(states[0]["net.head.weight"], states[2]["net.head.weight"])


def test_warm_start_continues_from_the_previous_weights() -> None:
    x, y = _toy(60, seed=0)
    first_losses = {}
    warm = _model()
    warm.fit(x, y)
    for name, model in (("warm", warm), ("fresh", _model()), ("cold", _model(warm_start=False))):
        if name == "cold":
            model.fit(x, y)
        log: list[dict] = []
        model.fit(x, y, progress=log.append)
        first_losses[name] = log[0]["loss"]
    assert first_losses["warm"] < 0.5 * first_losses["fresh"]
    assert first_losses["cold"] == pytest.approx(first_losses["fresh"])  # warm_start=False rebuilds the net


def test_resnet18_builds_trains_and_embeds_in_512_dimensions() -> None:
    x, y = _toy(8, seed=0, size=32)
    model = _model(arch="resnet18", image_size=32, train=FAST | {"epochs": 1, "batch_size": 4})
    metrics = model.fit(x, y)
    assert metrics["epochs_run"] == 1
    inputs = model.pool_inputs(x[:3], frozenset({Input.EMBEDDINGS, Input.SAMPLES}), x, y)
    assert inputs.embeddings.shape == (3, 512) and inputs.samples.shape == (3, 6, 3)


def test_pretrained_path_loads_a_local_state_dict(tmp_path) -> None:
    torch.manual_seed(5)
    source = SmallCNN(in_channels=1)
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    x, y = _toy(20, seed=0)
    tuned = _model(pretrained_path=str(path), train=FAST | {"epochs": 1, "lr": 1e-7, "weight_decay": 0.0})
    tuned.fit(x, y)
    scratch = _model(train=FAST | {"epochs": 1, "lr": 1e-7, "weight_decay": 0.0})
    scratch.fit(x, y)
    want = source.fc[1].weight
    torch.testing.assert_close(tuned.net.backbone.fc[1].weight, want, atol=1e-5, rtol=0)
    assert float((scratch.net.backbone.fc[1].weight - want).abs().max().detach()) > 1e-2


def test_a_wrong_pretrained_file_fails_clearly(tmp_path) -> None:
    x, y = _toy(10, seed=0)
    path = tmp_path / "colour.pth"
    torch.save(SmallCNN(in_channels=3).state_dict(), path)  # 3 input channels, the model wants 1
    with pytest.raises(InvalidParamsError, match="wrong shape"):
        _model(pretrained_path=str(path)).fit(x, y)
    with pytest.raises(InvalidParamsError, match="is not a file"):
        _model(pretrained_path=str(tmp_path / "missing.pth")).fit(x, y)


def test_state_dict_round_trip_restores_identical_predictions() -> None:
    x, y = _toy(40, seed=0)
    model = _model(learning_loss=True)
    model.fit(x, y)
    state = model.state_dict()
    json.dumps({k: v for k, v in state.items() if not isinstance(v, torch.Tensor)})
    twin = ImageClassifier(3, **model.config()["params"])
    twin.load_state_dict(state)
    needs = frozenset({Input.SAMPLES, Input.EMBEDDINGS, Input.PREDICTED_LOSS})
    a, b = model.pool_inputs(x, needs, x, y), twin.pool_inputs(x, needs, x, y)
    for name in ("probs", "samples", "embeddings", "predicted_loss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    with pytest.raises(InvalidParamsError, match="image_size=8 but the params say 12"):
        _model(image_size=12, learning_loss=True).load_state_dict(state)


def test_an_untrained_model_says_so() -> None:
    with pytest.raises(RuntimeError, match="not trained yet"):
        _model().predict_proba(np.zeros((2, 8, 8), np.uint8))


def test_every_strategy_the_model_can_serve_ranks_its_pool_inputs() -> None:
    x, y = _toy(60, seed=0)
    model = _model(learning_loss=True)
    model.fit(x[:30], y[:30])
    served = 0
    for name in STRATEGIES.names():
        strategy = build_strategy(name)
        if not strategy.required_inputs() <= model.provides:
            continue
        needs = strategy.required_inputs() | (strategy.optional_inputs() & model.provides)
        ranking = strategy.rank(model.pool_inputs(x[30:], needs, x[:30], y[:30]))
        assert sorted(ranking.order.tolist()) == list(range(30)), name
        served += 1
    box_inputs = {Input.BOXES, Input.BOX_SAMPLES, Input.BOX_IOU}  # a detector's, not a classifier's
    image_level = [n for n in STRATEGIES.names() if not STRATEGIES.get(n).needs & box_inputs]
    assert served == len(image_level)  # the cnn provides every input an image-level strategy can need
