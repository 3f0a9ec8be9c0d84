"""The object detection kind: <RectangleLabels> on an <Image>; Label Studio's boxes in, regions with scores out."""

from __future__ import annotations

import numpy as np
import pytest

from core.label_config import kind_of
from core.labeled_set import split_tasks
from plugins.boxes import Detections
from plugins.kinds import UnsupportedConfigError, UnusableAnswer
from plugins.strategies import build_strategy

BOXES = ('<View><Image name="img" value="$image"/><RectangleLabels name="defect" toName="img">'
         '<Label value="scratch"/><Label value="stain"/></RectangleLabels></View>')


def _box(x, y, w, h, label="scratch", rotation=0, from_name="defect"):
    return {"from_name": from_name, "to_name": "img", "type": "rectanglelabels", "original_width": 640,
            "original_height": 480, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation,
                                              "rectanglelabels": [label]}}


def test_a_rectangle_labels_config_is_served_as_detection():
    kind = kind_of(BOXES)
    assert kind.name == "image_detection" and kind.labels == ("scratch", "stain")
    assert (kind.from_name, kind.to_name, kind.value_key) == ("defect", "img", "image")
    assert kind.models == ("detector",) and not kind.shardable


@pytest.mark.parametrize("config, words", [
    ('<View><Image name="img" value="$image"/><RectangleLabels name="d" toName="img"/></View>', "at least 1 label"),
    ('<View><Image name="img" value="$image"/><RectangleLabels name="d" toName="img"><Label value="a"/>'
     '<Label value="a"/></RectangleLabels></View>', "duplicate"),
    ('<View><Image name="img" value="$image"/><RectangleLabels name="d" toName="elsewhere"><Label value="a"/>'
     '</RectangleLabels></View>', "toName='elsewhere'"),
])
def test_a_wrong_detection_config_says_what_is_wrong(config, words):
    with pytest.raises(UnsupportedConfigError, match=words):
        kind_of(config)


def test_percent_boxes_become_relative_corners_clipped_and_degenerate_ones_dropped():
    kind = kind_of(BOXES)
    answer = kind.answer([_box(10, 20, 30, 40), _box(90, 50, 20, 10, "stain"), _box(5, 5, 0, 10),
                          {"from_name": "other", "value": {}}])
    np.testing.assert_allclose(answer.rows, [[0, 0.1, 0.2, 0.4, 0.6], [1, 0.9, 0.5, 1.0, 0.6]], atol=1e-6)
    assert (answer.clipped, answer.dropped) == (1, 1)
    assert kind.answers_report([answer, answer]) == {"boxes_clipped": 2, "boxes_dropped": 2}
    y = kind.encode([answer, kind.answer([])])
    assert y.dtype == object and y[1].shape == (0, 5)  # an image with no box: "nothing here", a negative
    assert kind.label_counts(y) == {"scratch": 1, "stain": 1}
    assert kind.strata(y).tolist() == [0, 2] and kind.not_ready(y) is None
    assert kind.not_ready(kind.encode([kind.answer([])])) == "the labeled images hold no box yet"


@pytest.mark.parametrize("region, words", [
    (_box(10, 10, 20, 20, rotation=30), "rotated by 30 degrees"),
    (_box(10, 10, 20, 20, label="dent"), "exactly one of"),
    ({"from_name": "defect", "value": {"x": 1, "rectanglelabels": ["scratch"]}}, "lacks numeric"),
])
def test_a_box_that_cannot_be_read_as_drawn_is_refused_never_misread(region, words):
    kind = kind_of(BOXES)
    with pytest.raises(UnusableAnswer, match=words):
        kind.answer([region])
    assert kind.answer([_box(10, 10, 20, 20, rotation=360)]).rows.shape == (1, 5)  # a full turn is upright


def test_an_unusable_annotation_skips_its_task_with_the_reason():
    kind = kind_of(BOXES)
    tasks = [{"id": 1, "data": {"image": "http://x/1.png"}, "annotations": [{"id": 7, "result": [
        _box(10, 10, 20, 20, rotation=45)]}]},
             {"id": 2, "data": {"image": "http://x/2.png"}, "annotations": [{"id": 8, "result": []}]}]
    sets = split_tasks(tasks, kind)
    assert [t for t, _, _ in sets.labeled] == [2]
    assert sets.skipped[0].task == 1 and sets.skipped[0].reason == "unusable_annotation"
    assert "rotated by 45 degrees" in sets.skipped[0].detail


def _detections():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.05, 0.05, 0.9]], dtype=np.float32)
    return Detections(np.array([[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.7, 0.9], [0.0, 0.0, 0.1, 0.1]], np.float32),
                      np.array([0, 1, 0]), np.array([0.8, 0.5, 0.05], np.float32), probs)


def test_predictions_are_one_region_per_shown_box_with_its_own_score():
    kind = kind_of(BOXES)
    regions = kind.regions(_detections(), threshold=0.3)
    assert [r["value"]["rectanglelabels"] for r in regions] == [["scratch"], ["stain"]]
    assert [r["score"] for r in regions] == pytest.approx([0.8, 0.5])
    v = regions[0]["value"]
    assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx((10, 20, 30, 40), abs=1e-4)
    assert all(r["from_name"] == "defect" and r["to_name"] == "img" for r in regions)
    seen = kind.summary(_detections(), threshold=0.3)
    assert seen["label"] == "scratch, stain" and seen["confidence"] == pytest.approx(0.5)
    entropies = [-(p * np.log(p)).sum() for p in _detections().probs.astype(np.float64)]
    assert seen["uncertainty"] == pytest.approx(max(entropies))
    empty = Detections.empty(2)
    assert kind.regions(empty, 0.3) == [] and kind.summary(empty, 0.3)["label"] == "(nothing found)"
    assert kind.uncertainty(np.array([empty, _detections()], dtype=object))[0] == 0.0


def test_strategies_that_read_whole_image_probabilities_are_refused_with_what_to_use():
    kind = kind_of(BOXES)
    with pytest.raises(ValueError, match="strategy entropy reads class probabilities") as err:
        kind.check_strategy(build_strategy("entropy"))
    assert "random" in str(err.value) and "coreset" in str(err.value)
    kind.check_strategy(build_strategy("random"))
    kind.check_strategy(build_strategy("learning_loss"))


def test_a_new_detection_project_gets_a_detector_and_a_box_strategy_a_classification_one_keeps_the_defaults():
    from core.project_settings import ProjectSettings, settings_for_kind

    defaults = ProjectSettings.model_validate({"strategy": {"name": "entropy"}, "model": {"name": "cnn"},
                                               "image_size": 28})
    seeded = settings_for_kind(defaults, kind_of(BOXES))
    assert (seeded.model.name, seeded.strategy.name, seeded.image_size) == ("detector", "box_uncertainty", 128)
    assert seeded.retrain_every == defaults.retrain_every
    single = '<View><Image name="i" value="$image"/><Choices name="c" toName="i"><Choice value="a"/>' \
             '<Choice value="b"/></Choices></View>'
    assert settings_for_kind(defaults, kind_of(single)) is defaults
    fitting = defaults.model_copy(update={"strategy": defaults.strategy.model_copy(update={"name": "random"})})
    assert settings_for_kind(fitting, kind_of(BOXES)).strategy.name == "random"  # a default that fits stays


def test_settings_accept_a_detection_copy_paste_rule_and_refuse_a_rule_no_kind_can_use():
    from core.project_settings import InvalidSettingsError, validate_settings

    rules = validate_settings({"augment": [{"augmentation": "copy_paste", "source": ["scratch"]}]}).augment
    assert rules[0].augmentation == "copy_paste"
    with pytest.raises(InvalidSettingsError, match="unknown augmentation 'nope'.*as a detection rule"):
        validate_settings({"augment": [{"augmentation": "nope"}]})
