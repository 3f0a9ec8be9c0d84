"""Detection metrics (plugins.box_metrics) against values worked out by hand with COCO's rules.

COCO's AP: detections of a class sorted by score, matched greedily to unmatched true boxes at IoU >= t,
precision made non-increasing in recall, then averaged at the 101 recall points 0, 0.01, ..., 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from plugins.box_metrics import detection_metrics, image_recall
from plugins.boxes import Detections, box_targets

LABELS = ["scratch", "dent"]


def found(boxes: list[list[float]], scores: list[float], labels: list[int], n_classes: int = 2) -> Detections:
    k = len(scores)
    probs = np.full((k, n_classes + 1), 1.0 / (n_classes + 1), np.float32)
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                      np.asarray(scores, np.float32), probs)


def test_one_hit_and_one_miss_give_ap_51_of_101() -> None:
    # ranked: a hit (precision 1 at recall 1/2), then a false box; the second true box is never found, so the
    # interpolated precision is 1 at the 51 recall points 0..0.5 and 0 above: AP = 51/101 at every IoU
    # threshold (the hit is exact)
    y = box_targets([[[0, .1, .1, .5, .5]], [[0, .5, .5, .9, .9]]])
    outputs = [found([[.1, .1, .5, .5]], [.9], [0]), found([[0, 0, .2, .2]], [.8], [0])]
    metrics = detection_metrics(y, outputs, LABELS, threshold=0.85)
    assert metrics["map_50"] == pytest.approx(51 / 101, abs=1e-6)
    assert metrics["map"] == pytest.approx(51 / 101, abs=1e-6)
    assert metrics["ap_50/scratch"] == pytest.approx(51 / 101, abs=1e-6)
    assert "ap_50/dent" not in metrics  # no true dent: its AP is undefined, not 0
    assert metrics["image_recall"] == 0.5  # the second image's only box scores 0.8 < 0.85
    assert detection_metrics(y, outputs, LABELS, threshold=0.5)["image_recall"] == 1.0


def test_a_loose_box_counts_at_low_iou_thresholds_only() -> None:
    # IoU 0.18 / 0.25 = 0.72: a hit at t = .50, .55, .60, .65, .70 and a miss at .75 ... .95, so AP is 1 at 5
    # of the 10 thresholds
    y = box_targets([[[0, 0, 0, .5, .5]]])
    metrics = detection_metrics(y, [found([[0, 0, .5, .36]], [.7], [0])], LABELS, threshold=0.5)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert metrics["map"] == pytest.approx(0.5)


def test_a_false_box_on_a_negative_image_outranking_the_hit_halves_ap() -> None:
    # ranked: false box (precision 0), hit (precision 1/2 at recall 1): interpolated precision 1/2 everywhere
    y = box_targets([[[0, .2, .2, .6, .6]], []])
    outputs = [found([[.2, .2, .6, .6]], [.6], [0]), found([[.1, .1, .3, .3]], [.95], [0])]
    metrics = detection_metrics(y, outputs, LABELS, threshold=0.5)
    assert metrics["map_50"] == pytest.approx(0.5)
    assert metrics["image_recall"] == 1.0  # only images with a true box count


def test_per_label_ap_and_the_mean_over_labels() -> None:
    y = box_targets([[[0, .1, .1, .4, .4], [1, .6, .6, .9, .9]]])
    outputs = [found([[.1, .1, .4, .4], [.6, .6, .9, .9]], [.9, .8], [0, 0])]  # the dent is called a scratch
    metrics = detection_metrics(y, outputs, LABELS, threshold=0.5)
    assert metrics["ap_50/scratch"] == pytest.approx(1.0)  # the extra scratch ranks after the hit
    assert metrics["ap_50/dent"] == pytest.approx(0.0)
    assert metrics["map_50"] == pytest.approx(0.5)


def test_images_with_nothing_true_and_nothing_found_change_nothing() -> None:
    y = box_targets([[[0, .1, .1, .5, .5]], [[0, .5, .5, .9, .9]]])
    outputs = [found([[.1, .1, .5, .5]], [.9], [0]), found([[0, 0, .2, .2]], [.8], [0])]
    padded = box_targets([*y, [], []])
    more = [*outputs, Detections.empty(2), Detections.empty(2)]
    want = detection_metrics(y, outputs, LABELS, 0.85)
    assert detection_metrics(padded, more, LABELS, 0.85) == pytest.approx(want)


def test_no_true_box_anywhere_leaves_the_metrics_out() -> None:
    y = box_targets([[], []])
    assert detection_metrics(y, [Detections.empty(2), found([[0, 0, .5, .5]], [.9], [1])], LABELS, 0.5) == {}
    assert image_recall(y, [Detections.empty(2)] * 2, 0.5) is None


def test_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="2 targets but 1 outputs"):
        detection_metrics(box_targets([[], []]), [Detections.empty(2)], LABELS, 0.5)
