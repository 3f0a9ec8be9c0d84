"""Held-out metrics of a detector: COCO mAP (torchmetrics, pycocotools backend) and image-level recall.

Boxes on both sides are relative corner boxes (plugins.boxes); IoU does not depend on the scale, so they are
evaluated as they are. A metric that is undefined on the held-out set is left out of the result rather than
reported as NaN (metrics travel as JSON): mAP and image recall when no held-out image has a true box, a
label's AP when no held-out image has a true box of that label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

from plugins.boxes import Detections

BACKEND = "pycocotools"


def _as_targets(y: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
    out = []
    for rows in y:
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
        out.append({"boxes": torch.as_tensor(rows[:, 1:]), "labels": torch.as_tensor(rows[:, 0]).long()})
    return out


def _as_predictions(outputs: Sequence[Detections]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.as_tensor(np.asarray(d.boxes, dtype=np.float32).reshape(-1, 4)),
             "scores": torch.as_tensor(np.asarray(d.scores, dtype=np.float32).reshape(-1)),
             "labels": torch.as_tensor(np.asarray(d.labels).reshape(-1)).long()} for d in outputs]


def _mean_average_precision(preds: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]],
                            **options: object) -> dict[str, torch.Tensor]:
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=BACKEND, **options)
    metric.update(preds, targets)
    return metric.compute()


def image_recall(y: Sequence[np.ndarray], outputs: Sequence[Detections], threshold: float) -> float | None:
    """Of the images with a true box, the share where some predicted box scores >= threshold (None: none)."""
    positive = [i for i, rows in enumerate(y) if len(np.asarray(rows).reshape(-1, 5))]
    if not positive:
        return None
    found = [bool(len(outputs[i].scores) and np.max(outputs[i].scores) >= threshold) for i in positive]
    return float(np.mean(found))


def detection_metrics(y: Sequence[np.ndarray], outputs: Sequence[Detections], labels: Sequence[str],
                      threshold: float) -> dict[str, float]:
    """'map_50' (mAP at IoU 0.5), 'map' (COCO mAP over IoU .5:.95), 'ap_50/<label>' per label and
    'image_recall' at `threshold`, of detections `outputs` against (k, 5) targets `y`, one per image."""
    if len(y) != len(outputs):
        raise ValueError(f"{len(y)} targets but {len(outputs)} outputs")
    targets, preds = _as_targets(y), _as_predictions(outputs)
    present = sorted({int(c) for t in targets for c in t["labels"].tolist()})
    metrics: dict[str, float] = {}
    if present:
        overall = _mean_average_precision(preds, targets)
        metrics["map_50"] = float(overall["map_50"])
        metrics["map"] = float(overall["map"])
        per_class = _mean_average_precision(preds, targets, iou_thresholds=[0.5], class_metrics=True)
        classes = np.atleast_1d(per_class["classes"].numpy()).tolist()
        values = np.atleast_1d(per_class["map_per_class"].numpy()).tolist()
        for c, ap in zip(classes, values):
            if int(c) in present and 0 <= int(c) < len(labels):
                metrics[f"ap_50/{labels[int(c)]}"] = float(ap)
    recall = image_recall(y, outputs, threshold)
    if recall is not None:
        metrics["image_recall"] = recall
    return metrics
