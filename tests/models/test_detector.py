"""The object detector plugin (plugins.models.detector): targets, training, detections, pool inputs and
artifacts.

Most tests train from scratch for a step or two on 64 px images (fast, no weights needed) with box_floor 0,
so even an untrained detector reports boxes to check. The one test that checks it learns uses the offline
ImageNet weights (fetched by .ci/setup; skipped without them except on CI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision

from plugins.boxes import BoxEvidence, Detections, box_targets, iou_matrix
from plugins.models import build_model
from plugins.models.artifact import load_artifact, save_artifact
from plugins.models.detector import (
    DetectorParams,
    ObjectDetector,
    augment_boxes,
    build_network,
    load_pretrained,
    lr_factor,
    sigmoid_distribution,
)
from plugins.models.pretrained import PretrainedWeightsError, weights_bytes
from plugins.strategies import Input, InvalidParamsError, MissingInputError

torch.set_num_threads(1)

# determinism is promised on the CPU (CUDA's RoIAlign backward adds atomically)
FAST = {"pretrained": "none", "epochs": 1, "min_epoch_images": 8, "box_floor": 0.0, "max_boxes": 5,
        "mc_samples": 4, "stability_passes": 2, "device": "cpu"}
BOX_INPUTS = frozenset({Input.BOXES, Input.BOX_SAMPLES, Input.BOX_IOU})
ALL_INPUTS = ObjectDetector.provides


def squares(n: int, side: int = 64, seed: int = 0, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Dark noise with one bright square per image (class i % n_classes); every 4th image is empty."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, side, side, 3)).astype(np.uint8)
    rows: list[list[list[float]]] = []
    for i in range(n):
        if i % 4 == 3:
            rows.append([])
            continue
        s = int(rng.integers(side * 3 // 10, side * 6 // 10))
        x0, y0 = (int(v) for v in rng.integers(0, side - s, size=2))
        x[i, y0:y0 + s, x0:x0 + s] = 230 if i % n_classes == 0 else 160
        rows.append([[i % n_classes, x0 / side, y0 / side, (x0 + s) / side, (y0 + s) / side]])
    return x, box_targets(rows)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return squares(8)


@pytest.fixture(scope="module")
def trained(data: tuple[np.ndarray, np.ndarray]) -> ObjectDetector:
    model = ObjectDetector(2, **FAST)
    model.fit(*data)
    return model


def twin(model: ObjectDetector, **changes: Any) -> ObjectDetector:
    """The same trained weights under other inference params."""
    other = ObjectDetector(model.n_classes, **(model.params.model_dump() | changes))
    other.load_state_dict(model.state_dict())
    return other


def imagenet_weights() -> None:
    try:
        weights_bytes()
    except PretrainedWeightsError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"the ImageNet weights are not fetched here: {exc}")


# -- outputs ------------------------------------------------------------------------------------------------

def check_detections(dets: np.ndarray, n: int, n_classes: int, floor: float, max_boxes: int) -> None:
    assert dets.dtype == object and dets.shape == (n,)
    for d in dets:
        assert isinstance(d, Detections)
        k = len(d)
        assert k <= max_boxes
        assert d.boxes.shape == (k, 4) and d.boxes.dtype == np.float32
        assert d.labels.shape == (k,) and d.labels.dtype == np.int64
        assert d.scores.shape == (k,) and d.scores.dtype == np.float32
        assert d.probs.shape == (k, n_classes + 1) and d.probs.dtype == np.float32
        assert ((d.boxes >= 0) & (d.boxes <= 1)).all()
        assert (d.boxes[:, 2] > d.boxes[:, 0]).all() and (d.boxes[:, 3] > d.boxes[:, 1]).all()
        assert ((d.labels >= 0) & (d.labels < n_classes)).all()
        assert (d.scores >= floor).all() and (np.diff(d.scores) <= 1e-7).all()  # most confident first
        np.testing.assert_allclose(d.probs.sum(axis=1), 1.0, atol=1e-5)


def test_detections_have_the_contracted_shapes_and_ranges(
        trained: ObjectDetector, data: tuple[np.ndarray, np.ndarray]) -> None:
    dets = trained.predict_proba(data[0])
    check_detections(dets, len(data[0]), 2, 0.0, 5)
    assert sum(len(d) for d in dets) > 0  # with box_floor 0 even an untrained detector reports boxes
    for d in dets:  # Faster R-CNN: the score is the softmax of the label, the background the last column
        np.testing.assert_allclose(d.scores, d.probs[np.arange(len(d)), d.labels], rtol=1e-6)
        assert (d.probs[:, -1] <= 1.0 - d.scores + 1e-6).all()
    assert trained.predict_proba(data[0][:0]).shape == (0,)


def test_box_floor_and_max_boxes_cut_the_same_ranking(
        trained: ObjectDetector, data: tuple[np.ndarray, np.ndarray]) -> None:
    everything = trained.predict_proba(data[0])
    floor = float(np.median(np.concatenate([d.scores for d in everything])))
    cut = twin(trained, box_floor=floor, max_boxes=2).predict_proba(data[0])
    check_detections(cut, len(data[0]), 2, floor, 2)
    for full, few in zip(everything, cut):
        keep = full.scores >= floor
        np.testing.assert_allclose(few.boxes, full.boxes[keep][:2], atol=1e-6)


def test_pool_inputs_give_box_evidence_that_matches_the_detections(
        trained: ObjectDetector, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    inputs = trained.pool_inputs(x, ALL_INPUTS, x[:3], y[:3])
    dets = trained.predict_proba(x)
    m = sum(len(d) for d in dets)
    assert isinstance(inputs.boxes, BoxEvidence) and inputs.boxes.n_images == len(x)
    np.testing.assert_array_equal(inputs.boxes.image, np.repeat(np.arange(len(x)), [len(d) for d in dets]))
    np.testing.assert_allclose(inputs.boxes.probs, np.concatenate([d.probs for d in dets]), atol=1e-6)
    assert inputs.box_samples.shape == (m, 4, 3)
    np.testing.assert_allclose(inputs.box_samples.sum(axis=2), 1.0, atol=1e-5)
    assert inputs.box_iou.shape == (m,) and ((inputs.box_iou >= 0) & (inputs.box_iou <= 1)).all()
    assert inputs.embeddings.shape == (len(x), 1280) and inputs.labeled_embeddings.shape == (3, 1280)
    assert inputs.predicted_loss.shape == (len(x),) and np.isfinite(inputs.predicted_loss).all()
    assert inputs.n == len(x) and inputs.available() == ALL_INPUTS
    inputs.prepared(ALL_INPUTS, torch.device("cpu"), torch.float32)  # the strategies' own validation passes
    # the same pass's Detections ride beside the inputs: the rescore's pre-annotations need no second pass
    assert inputs.outputs.dtype == object and len(inputs.outputs) == len(x)
    for mine, theirs in zip(inputs.outputs, dets):
        np.testing.assert_allclose(mine.boxes, theirs.boxes, atol=1e-5)
        np.testing.assert_array_equal(mine.labels, theirs.labels)


def test_pool_inputs_compute_only_what_is_asked(
        trained: ObjectDetector, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    embeddings_only = trained.pool_inputs(x, frozenset({Input.EMBEDDINGS}), x[:0], y[:0])
    assert embeddings_only.available() == {Input.EMBEDDINGS}
    only_iou = trained.pool_inputs(x, frozenset({Input.BOX_IOU}), x[:0], y[:0])
    assert only_iou.available() == {Input.BOXES, Input.BOX_IOU}  # box inputs come with their boxes
    empty = trained.pool_inputs(x[:0], BOX_INPUTS, x[:0], y[:0])
    assert empty.boxes.n_images == 0 and empty.box_samples.shape == (0, 4, 3) and empty.box_iou.shape == (0,)


def test_mc_dropout_samples_vary_with_dropout_and_equal_the_probabilities_without(
        trained: ObjectDetector, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    still = twin(trained, dropout=0.0).pool_inputs(x, BOX_INPUTS, x[:0], y[:0])
    np.testing.assert_allclose(still.box_samples, np.repeat(still.boxes.probs[:, None], 4, axis=1), atol=1e-5)
    shaken = twin(trained, dropout=0.5).pool_inputs(x, BOX_INPUTS, x[:0], y[:0])
    np.testing.assert_allclose(shaken.boxes.probs, still.boxes.probs, atol=1e-6)  # no dropout in predictions
    assert shaken.box_samples.std(axis=1).max() > 1e-3


def test_localization_stability_is_1_without_noise_and_in_0_1_with(
        trained: ObjectDetector, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    clean = twin(trained, stability_noise=0.0).pool_inputs(x, BOX_INPUTS, x[:0], y[:0])
    np.testing.assert_allclose(clean.box_iou, 1.0, atol=1e-5)
    noisy = twin(trained, stability_noise=12.0).pool_inputs(x, BOX_INPUTS, x[:0], y[:0])
    assert ((noisy.box_iou >= 0) & (noisy.box_iou <= 1)).all()  # untrained: its boxes are its anchors


def test_training_and_pool_inputs_are_deterministic_under_a_seed(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    models = [ObjectDetector(2, **FAST, seed=3) for _ in range(2)]
    metrics = [m.fit(x, y) for m in models]
    assert metrics[0] == metrics[1]
    first, second = (m.state_dict() for m in models)
    assert all(torch.equal(first[k], second[k]) for k in first if isinstance(first[k], torch.Tensor))
    a, b = (m.pool_inputs(x, ALL_INPUTS, x[:2], y[:2]) for m in models)
    for name in ("box_samples", "box_iou", "embeddings", "predicted_loss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    again = models[0].pool_inputs(x, BOX_INPUTS, x[:0], y[:0])
    np.testing.assert_array_equal(again.box_samples, a.box_samples)


# -- training ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet", "fcos"])
def test_each_architecture_trains_a_step_and_reports(arch: str, data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = ObjectDetector(2, **(FAST | {"arch": arch, "min_epoch_images": 2, "batch_size": 2}))
    reports: list[dict[str, Any]] = []
    metrics = model.fit(x[:2], y[:2], progress=reports.append)
    assert [r["epoch"] for r in reports] == [1] and reports[0]["epochs"] == 1
    assert np.isfinite(reports[0]["loss"]) and metrics["train_loss"] == reports[0]["loss"]
    assert metrics["images"] == 2 and metrics["boxes"] == 2 and metrics["steps"] == 1
    check_detections(model.predict_proba(x), len(x), 2, 0.0, 5)
    inputs = model.pool_inputs(x, ALL_INPUTS, x[:1], y[:1])
    m = len(inputs.boxes.image)
    assert m > 0 and inputs.box_samples.shape == (m, 4, 3) and inputs.box_iou.shape == (m,)
    inputs.prepared(ALL_INPUTS, torch.device("cpu"), torch.float32)


def test_negative_images_alone_train(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = data
    model = ObjectDetector(2, **FAST)
    metrics = model.fit(x[:4], box_targets([[], [], [], []]))
    assert np.isfinite(metrics["train_loss"]) and metrics["boxes"] == 0 and metrics["negative_images"] == 4


def test_fit_warm_starts_from_the_current_weights(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = ObjectDetector(2, **FAST)
    model.fit(x, y)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    model.fit(x, y)
    twin_from_scratch = ObjectDetector(2, **FAST)
    twin_from_scratch.fit(x, y)
    after, scratch = model.net.state_dict(), twin_from_scratch.net.state_dict()
    key = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(after[key], before[key]) and torch.equal(scratch[key], before[key])


@pytest.mark.slow
def test_it_learns_to_find_a_bright_square() -> None:
    imagenet_weights()
    x, y = squares(8, side=128, n_classes=1)
    held_x, held_y = squares(8, side=128, seed=1, n_classes=1)
    model = ObjectDetector(1, epochs=10, min_epoch_images=32)
    model.fit(x, y)
    for images, targets in ((x, y), (held_x, held_y)):
        dets = model.predict_proba(images)
        positive = [i for i in range(len(images)) if len(targets[i])]
        top = [float(iou_matrix(targets[i][:, 1:], dets[i].boxes[:1]).max()) if len(dets[i]) else 0.0
               for i in positive]
        best_of_three = [float(iou_matrix(targets[i][:, 1:], dets[i].boxes[:3]).max())
                         if len(dets[i]) else 0.0 for i in positive]
        assert sum(v > 0.5 for v in top) >= len(positive) - 1, top
        assert min(best_of_three) > 0.5, best_of_three
        weakest_hit = min(float(dets[i].scores[0]) for i in positive)
        for i in set(range(len(images))) - set(positive):  # nothing there: nothing as sure as a real square
            assert not len(dets[i]) or float(dets[i].scores[0]) < weakest_hit
    stability = model.pool_inputs(held_x, BOX_INPUTS, held_x[:0], held_y[:0])
    top_rows = np.searchsorted(stability.boxes.image, [i for i in range(8) if len(held_y[i])])
    assert 0.0 <= stability.box_iou.min() < 1.0  # the noise moves boxes ...
    assert stability.box_iou[top_rows].mean() > 0.7  # ... but not the ones on a clear square


# -- augmentation --------------------------------------------------------------------------------------------

def test_augmentation_moves_the_boxes_with_the_pixels() -> None:
    x, y = squares(6, side=96, n_classes=1)
    rng = np.random.default_rng(0)
    for _ in range(4):
        for img, rows in zip(x, y):
            out, moved = augment_boxes(img, rows, rng)
            assert out.shape == img.shape and out.dtype == np.uint8
            assert len(moved) == len(rows)  # a square of 30-60 % of the side survives a 0.8-1.2 zoom
            for _, x0, y0, x1, y1 in moved:
                top, bottom = int(np.ceil(y0 * 96)) + 1, int(y1 * 96) - 1
                left, right = int(np.ceil(x0 * 96)) + 1, int(x1 * 96) - 1
                inner = out[top:bottom, left:right]
                assert inner.size and inner.min() > 200  # the box still holds the bright square


def test_augmentation_drops_boxes_pushed_out_of_the_image() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    rows = np.array([[0, 0.0, 0.0, 0.01, 0.01]], np.float32)  # one pixel in the corner
    rng = np.random.default_rng(1)
    kept = [len(augment_boxes(img, rows, rng)[1]) for _ in range(20)]
    assert 0 in kept  # shifted or shrunk below 2 px: dropped, never a degenerate box


# -- targets and params --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("targets", "message"), [
    (np.zeros((2, 5), np.float32), "object array"),
    (box_targets([[]]), "expected 2 targets"),
    (box_targets([[], [[0, .1, .1, .2, .2]]])[:, None], "1-D"),
    ([[], [[0, .1, .1, .2]]], r"target 1 must be a \(k, 5\) array"),
    (box_targets([[], [[0, .1, .1, .2, np.nan]]]), "target 1, box 0.*non-finite"),
    (box_targets([[], [[0, .1, .1, .2, .2], [2, .1, .1, .2, .2]]]), r"target 1, box 1.*class.*0\.\.1"),
    (box_targets([[[0.5, .1, .1, .2, .2]], []]), "target 0, box 0.*integer"),
    (box_targets([[[0, .3, .1, .2, .2]], []]), "target 0, box 0.*x0 < x1"),
    (box_targets([[[1, .1, .1, 1.2, .2]], []]), r"target 0, box 0.*\[0, 1\]"),
    (["abc", []], "target 0 is not a numeric"),
    ([None, []], r"target 0 must be a \(k, 5\) array"),
])
def test_bad_targets_are_refused_naming_the_item(targets: Any, message: str) -> None:
    model = ObjectDetector(2, **FAST)
    with pytest.raises(InvalidParamsError, match=message):
        model.fit(np.zeros((2, 64, 64, 3), np.uint8), targets)


def test_targets_as_a_list_of_arrays_are_accepted() -> None:
    checked = ObjectDetector(2).check_targets([np.zeros((0, 5)), [[1, 0, 0, 1, 1]]], 2)
    assert checked.dtype == object and checked[1].dtype == np.float32 and checked[0].shape == (0, 5)


def test_a_classification_augment_is_refused(data: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(InvalidParamsError, match="would not move the boxes"):
        ObjectDetector(2, **FAST).fit(*data, augment=lambda img, label, rng: img)


@pytest.mark.parametrize(("params", "message"), [
    ({"arch": "yolo"}, "arch"),
    ({"multilabel": True}, "one label each"),
    ({"device": "tpu"}, "device"),
    ({"anchor_scales": (0.5, -1.0)}, "positive"),
    ({"dropout": 1.0}, "dropout"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_params_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParamsError, match=message):
        ObjectDetector(2, **params)


def test_registered_as_detector_with_box_inputs_only() -> None:
    model = build_model("detector", 3)
    assert isinstance(model, ObjectDetector) and isinstance(model.params, DetectorParams)
    assert model.unsupported(frozenset({Input.PROBS, Input.SAMPLES, Input.HEAD, Input.BOXES})) == {
        Input.PROBS, Input.SAMPLES, Input.HEAD}
    plain = ObjectDetector(3, loss_head=False)
    assert Input.PREDICTED_LOSS not in plain.provides and Input.PREDICTED_LOSS in ObjectDetector.provides


def test_predicted_loss_needs_the_loss_head(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = ObjectDetector(2, **FAST, loss_head=False)
    model.fit(x[:4], y[:4])
    assert not any(k.startswith("loss_module.") for k in model.state_dict())
    with pytest.raises(MissingInputError, match="loss_head=true"):
        model.pool_inputs(x, frozenset({Input.PREDICTED_LOSS}), x[:0], y[:0])
    with pytest.raises(RuntimeError, match="not trained"):
        ObjectDetector(2).predict_proba(x)


def test_sigmoid_scores_become_a_distribution_with_a_background() -> None:
    q = torch.tensor([[0.5, 0.2], [0.0, 0.0]])
    want = [[0.5 / 1.1, 0.2 / 1.1, 0.4 / 1.1], [0, 0, 1]]
    np.testing.assert_allclose(sigmoid_distribution(q).numpy(), want, atol=1e-6)


def test_learning_rate_warms_up_then_decays() -> None:
    factors = [lr_factor(step, 100) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] < 0.01


# -- weights and artifacts -----------------------------------------------------------------------------------

def test_artifact_round_trip_predicts_identically_without_reading_pretrained_weights(
        trained: ObjectDetector, data: tuple[np.ndarray, np.ndarray], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = data
    served = twin(trained, pretrained="imagenet")  # a config naming weights this machine need not have
    path = save_artifact(tmp_path / "model.pt", served, label_map=["scratch", "dent"],
                         metrics={"map_50": 0.5})
    monkeypatch.setenv("LSAL_WEIGHTS_DIR", str(tmp_path / "no-weights-here"))

    def no_reading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("loading an artifact read pretrained weights")

    monkeypatch.setattr("plugins.models.detector.load_pretrained", no_reading)
    loaded = load_artifact(path).model
    assert isinstance(loaded, ObjectDetector) and loaded.config() == served.config()
    for a, b in zip(trained.predict_proba(x), loaded.predict_proba(x)):
        for field in ("boxes", "labels", "scores", "probs"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    before, after = (m.pool_inputs(x, ALL_INPUTS, x[:2], y[:2]) for m in (trained, loaded))
    for name in ("box_samples", "box_iou", "embeddings", "labeled_embeddings", "predicted_loss"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))


def test_a_state_of_another_architecture_is_refused(trained: ObjectDetector) -> None:
    with pytest.raises(InvalidParamsError, match="arch='faster_rcnn'"):
        ObjectDetector(2, arch="fcos").load_state_dict(trained.state_dict())


def test_pretrained_from_user_files(tmp_path: Path, trained: ObjectDetector) -> None:
    params = DetectorParams(pretrained="none")
    mobilenet = torchvision.models.mobilenet_v2(weights=None)
    torch.save(mobilenet.state_dict(), tmp_path / "mobilenet.pth")
    net = build_network("faster_rcnn", 2, params)
    load_pretrained(net, str(tmp_path / "mobilenet.pth"))
    assert torch.equal(net.backbone.body[0][0].weight, mobilenet.features[0][0].weight)

    path = save_artifact(tmp_path / "model.pt", trained, label_map=["a", "b"], metrics={})
    net = build_network("faster_rcnn", 2, params)
    load_pretrained(net, str(path))  # a whole earlier detector: every weight, heads included
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(net.state_dict()[key], trained.net.state_dict()[key])

    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(InvalidParamsError, match="neither a mobilenet_v2 state dict"):
        load_pretrained(net, str(tmp_path / "other.pth"))
    with pytest.raises(InvalidParamsError, match="does not exist"):
        ObjectDetector(2, **(FAST | {"pretrained": str(tmp_path / "missing.pth")})).fit(
            np.zeros((1, 64, 64, 3), np.uint8), box_targets([[]]))


def test_imagenet_weights_reach_the_backbone() -> None:
    imagenet_weights()
    from plugins.models.pretrained import mobilenet_v2_imagenet

    net = build_network("retinanet", 1, DetectorParams())
    load_pretrained(net, "imagenet")
    assert torch.equal(net.backbone.body[18][0].weight, mobilenet_v2_imagenet()["features.18.0.weight"])
