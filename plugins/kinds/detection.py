"""Object detection: an <Image> whose regions are drawn with a <RectangleLabels> control.

An annotation's boxes arrive in Label Studio's form (x, y, width, height in percent of the image, a
rotation, one label each) and train as relative corner boxes; an annotation with no box for the control is a
valid "nothing here" image (for defects, the negatives matter). A rotated box is refused (the annotation is
skipped with the reason), never read as an upright one; boxes reaching outside the image are clipped and
boxes with no area dropped, both counted in the retrain's report. A model output is a
`plugins.boxes.Detections`; the prediction is one region per box at or above the project's threshold, each
with its own score (Label Studio shows region scores to annotators).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from plugins.boxes import Detections, box_targets, clip_boxes, degenerate
from plugins.kinds.base import LabelConfig, TaskKind, UnusableAnswer, bind_control
from plugins.kinds.registry import register

_EPS = 1e-12
# strategy inputs a detector provides: a strategy that needs anything else reads class probabilities of a
# whole image, which a detection project does not have
DETECTION_INPUTS = frozenset({"boxes", "box_samples", "box_iou", "embeddings", "labeled_embeddings",
                              "predicted_loss"})


@dataclass(frozen=True)
class BoxAnswer:
    """One annotation's boxes as training rows, and what was clipped or dropped on the way."""

    rows: np.ndarray  # (k, 5) float32 [class, x0, y0, x1, y1], relative
    clipped: int = 0
    dropped: int = 0


@register("image_detection")
@dataclass(frozen=True)
class ImageDetection(TaskKind):
    """Boxes on an image: a detector's boxes as regions, box-level evidence for the strategies, mAP held out."""

    title = "object detection"
    needs = 'an <Image value="$field"> with a <RectangleLabels toName=...> (at least 1 label)'
    models = ("detector",)
    primary_metric = "holdout_map_50"
    uncertainty_name = "max box entropy"
    gate_resamples = 100  # each resample computes mAP twice (torchmetrics)
    shardable = False  # box evidence is ragged: a detection rescore runs as one job
    default_strategy = "box_uncertainty"
    default_image_size = 128

    @classmethod
    def match(cls, config: LabelConfig) -> ImageDetection | None:
        for control in config.controls:
            if control.tag != "rectanglelabels":
                continue
            bound = bind_control(config, control, ("image",), 1, "RectangleLabels", "label")
            if bound is not None:
                return cls(control.name, *bound)
        return None

    def answer(self, result: Sequence[Any]) -> BoxAnswer:
        rows, clipped, dropped = [], 0, 0
        index = {label: i for i, label in enumerate(self.labels)}
        for region in result or []:
            if not isinstance(region, dict) or region.get("from_name") != self.from_name:
                continue
            value = region.get("value") or {}
            names = value.get("rectanglelabels") or []
            if not isinstance(names, list) or len(names) != 1 or names[0] not in index:
                raise UnusableAnswer(f"a box of {self.from_name!r} has labels {names!r}; each box needs exactly one "
                                     f"of {list(self.labels)}")
            try:
                x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
                rotation = float(value.get("rotation") or 0.0)
            except (KeyError, TypeError, ValueError):
                raise UnusableAnswer(f"a box of {self.from_name!r} lacks numeric x, y, width, height") from None
            if not all(np.isfinite((x, y, w, h, rotation))):
                raise UnusableAnswer(f"a box of {self.from_name!r} has a non-finite coordinate")
            if abs(rotation % 360.0) > 1e-6 and abs(rotation % 360.0 - 360.0) > 1e-6:
                raise UnusableAnswer(f"a box of {self.from_name!r} is rotated by {rotation:g} degrees; rotated "
                                     "boxes are not trained on (redraw it upright)")
            corners = np.array([x, y, x + w, y + h], dtype=np.float64) / 100.0
            inside = clip_boxes(corners[None])[0]
            if degenerate(inside[None])[0]:
                dropped += 1
                continue
            clipped += int(not np.allclose(inside, corners))
            rows.append([index[names[0]], *inside])
        return BoxAnswer(np.asarray(rows, dtype=np.float32).reshape(-1, 5), clipped, dropped)

    def encode(self, answers: Sequence[Any]) -> np.ndarray:
        return box_targets([a.rows if isinstance(a, BoxAnswer) else a for a in answers])

    def answers_report(self, answers: Sequence[Any]) -> dict[str, int]:
        """Boxes clipped to the image and boxes dropped for having no area, over `answers`."""
        return {"boxes_clipped": sum(a.clipped for a in answers if isinstance(a, BoxAnswer)),
                "boxes_dropped": sum(a.dropped for a in answers if isinstance(a, BoxAnswer))}

    def strata(self, y: np.ndarray) -> np.ndarray:
        """Each image's rarest class among its boxes (len(labels) for an image with none)."""
        present = self._present(y)
        counts = present.sum(axis=0)
        rarity = np.where(present, counts[None, :], np.iinfo(np.int64).max)
        return np.where(present.any(axis=1), rarity.argmin(axis=1), len(self.labels)).astype(np.int64)

    def not_ready(self, y: np.ndarray) -> str | None:
        if not any(len(rows) for rows in y):
            return "the labeled images hold no box yet"
        return None

    def label_counts(self, y: np.ndarray) -> dict[str, int]:
        """Boxes per label."""
        counts = np.zeros(len(self.labels), dtype=np.int64)
        for rows in y:
            np.add.at(counts, np.asarray(rows)[:, 0].astype(np.int64), 1)
        return {label: int(n) for label, n in zip(self.labels, counts)}

    def _present(self, y: np.ndarray) -> np.ndarray:
        present = np.zeros((len(y), len(self.labels)), dtype=bool)
        for i, rows in enumerate(y):
            present[i, np.asarray(rows)[:, 0].astype(np.int64)] = True
        return present

    def regions(self, output: Detections, threshold: float) -> list[dict[str, Any]]:
        shown = output.above(threshold)
        regions = []
        for i, (box, label, score) in enumerate(zip(shown.boxes, shown.labels, shown.scores)):
            x0, y0, x1, y1 = (float(v) * 100.0 for v in clip_boxes(box[None])[0])
            regions.append({"id": f"lsal{i}", "from_name": self.from_name, "to_name": self.to_name,
                            "type": "rectanglelabels", "score": float(score),
                            "value": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "rotation": 0,
                                      "rectanglelabels": [self.labels[int(label)]]}})
        return regions

    def summary(self, output: Detections, threshold: float) -> dict[str, Any]:
        shown = output.above(threshold)
        names = [self.labels[int(c)] for c in shown.labels]
        label = ", ".join(f"{n} x{names.count(n)}" if names.count(n) > 1 else n
                          for n in dict.fromkeys(names)) or "(nothing found)"
        # confidence: the least sure shown box; with none shown, how sure the model is that nothing is there
        if len(shown):
            confidence = float(np.min(shown.scores))
        else:
            confidence = 1.0 - float(np.max(output.scores)) if len(output) else 1.0
        return {"label": label, "confidence": confidence,
                "uncertainty": float(self.uncertainty(np.asarray([output], dtype=object))[0])}

    def uncertainty(self, outputs: np.ndarray) -> np.ndarray:
        """The largest class entropy (over labels and background) of an image's boxes; 0 with no box."""
        values = np.zeros(len(outputs))
        for i, output in enumerate(outputs):
            if len(output):
                p = np.clip(np.asarray(output.probs, dtype=np.float64), _EPS, 1.0)
                values[i] = float(np.max(-(p * np.log(p)).sum(axis=1)))
        return values

    def max_uncertainty(self) -> float:
        return float(np.log(len(self.labels) + 1))

    def metrics(self, y: np.ndarray, outputs: np.ndarray, threshold: float) -> dict[str, float]:
        from plugins.box_metrics import detection_metrics  # torchmetrics: the kinds stay importable without it

        return {f"holdout_{k}": v for k, v in detection_metrics(y, outputs, list(self.labels), threshold).items()}

    def synthesize(self, x: np.ndarray, y: np.ndarray, rules: Sequence[Any], rng: np.random.Generator) -> Any:
        from plugins.augment.synthesis import synthesize_boxes

        return synthesize_boxes(x, y, rules, list(self.labels), rng)

    def check_strategy(self, strategy: Any) -> None:
        unsound = sorted(_needing_more(strategy))
        if unsound:
            from plugins.strategies import STRATEGIES

            fitting = [n for n in STRATEGIES.names() if {i.value for i in STRATEGIES.get(n).needs} <= DETECTION_INPUTS]
            raise ValueError(f"strategy {', '.join(unsound)} reads class probabilities of a whole image, which an "
                             f"object detection project ({self.from_name!r} draws boxes) does not have; it can use "
                             f"{', '.join(fitting)}")


def _needing_more(strategy: Any) -> set[str]:
    """Names of the strategies in the tree that need an input a detector does not provide."""
    own = set() if {i.value for i in strategy.required_inputs()} <= DETECTION_INPUTS else {strategy.name}
    return own.union(*(_needing_more(child) for child in strategy.children()))
