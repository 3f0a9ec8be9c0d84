"""Boxes: what a detector says about one image, what a box annotation trains, and the pure geometry of both.

Coordinates are relative to the image: x0, y0, x1, y1 in [0, 1] (Label Studio's percentages / 100, corner
form), so they survive any resize of the image. Class index c < C is the kind's c-th label; class C (the
last column of a box's class distribution) is background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """A detector's boxes on one image, most confident first."""

    boxes: np.ndarray  # (k, 4) float32 x0, y0, x1, y1 relative to the image
    labels: np.ndarray  # (k,) int64 class index (< C)
    scores: np.ndarray  # (k,) float32 confidence of that label
    probs: np.ndarray  # (k, C + 1) float32 class distribution of each box, last column background

    @classmethod
    def empty(cls, n_classes: int) -> Detections:
        """No boxes."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                   np.zeros((0, n_classes + 1), np.float32))

    def __len__(self) -> int:
        return int(len(self.scores))

    def above(self, threshold: float) -> Detections:
        """The boxes whose score is at least `threshold`."""
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.labels[keep], self.scores[keep], self.probs[keep])


@dataclass(frozen=True)
class BoxEvidence:
    """Box-level evidence over a pool of images, flat over boxes (the strategy input `boxes`).

    Every box of every image is one row; `image` says whose. An image may have no row (no detection).
    What else a strategy may ask for per box rides beside it in PoolInputs: `box_samples` (M, K, C + 1),
    the distributions under K MC-dropout passes, and `box_iou` (M,), each box's mean IoU with its match under
    small input perturbations (localization stability).
    """

    n_images: int
    image: np.ndarray  # (M,) int64 image index of each box, non-decreasing, < n_images
    probs: np.ndarray  # (M, C + 1) class distribution of each box, last column background

    @property
    def n_classes(self) -> int:
        """Foreground classes C (the distributions have C + 1 columns)."""
        return int(self.probs.shape[1]) - 1


def box_targets(rows: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Per-image (k, 5) float32 [class, x0, y0, x1, y1] arrays as one object array (k = 0: nothing here)."""
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        out[i] = np.asarray(row, dtype=np.float32).reshape(-1, 5)
    return out


def clip_boxes(boxes: np.ndarray) -> np.ndarray:
    """(k, 4) relative corner boxes clipped to the image."""
    return np.clip(np.asarray(boxes, dtype=np.float32), 0.0, 1.0)


def degenerate(boxes: np.ndarray, min_side: float = 1e-3) -> np.ndarray:
    """(k,) True for boxes with a side shorter than `min_side` (relative): nothing to learn from."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0] < min_side) | (boxes[:, 3] - boxes[:, 1] < min_side)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of corner boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
