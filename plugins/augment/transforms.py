"""Defect augmentation at training time, synthetic manufacturing data sets, and normal surface textures."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from plugins.augment.base import MIN_SIZE, Augmentation, build_augmentation, check_image
from plugins.strategies import InvalidParamsError


class ClassConditionalAugment:
    """An `Augment` callable (see plugins.models.base): with probability `probability`, one augmentation
    picked at random is applied to images whose label is in `classes` (all labels when None); other images
    are returned untouched. Use it to multiply the appearances of a rare defect class during training."""

    def __init__(self, augmentations: Sequence[Augmentation], classes: Iterable[int] | None = None,
                 probability: float = 0.5) -> None:
        if not augmentations:
            raise InvalidParamsError("ClassConditionalAugment needs at least one augmentation")
        wrong = [type(a).__name__ for a in augmentations if not isinstance(a, Augmentation)]
        if wrong:
            raise InvalidParamsError(f"augmentations must be Augmentation instances (build_augmentation), "
                                     f"got {', '.join(wrong)}")
        if not 0.0 <= probability <= 1.0:
            raise InvalidParamsError(f"probability must be in [0, 1], got {probability}")
        self.augmentations = list(augmentations)
        self.classes = None if classes is None else frozenset(int(c) for c in classes)
        self.probability = float(probability)

    def __call__(self, image: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
        """The image with a random augmentation applied, or the same image when not chosen."""
        if self.classes is not None and int(label) not in self.classes:
            return image
        if rng.random() >= self.probability:
            return image
        augmentation = self.augmentations[int(rng.integers(len(self.augmentations)))]
        return augmentation.apply(image, rng)[0]


@dataclass(frozen=True)
class DefectDataset:
    """A labelled synthetic data set: label 0 is normal, label i is the defect kind classes[i]."""

    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray  # index of the normal image each item was made from
    masks: np.ndarray  # (N, H, W) bool defect footprints, all False for normal items
    classes: tuple[str, ...]


def defect_dataset(normals: np.ndarray, n: int, rng: np.random.Generator, defect_ratio: float = 0.05,
                   kinds: Sequence[str | Augmentation] = ("scratch", "stain", "dent")) -> DefectDataset:
    """`n` images drawn from `normals` (N, H, W[, C]), round(n * defect_ratio) of them given a defect; the
    defective items are spread evenly over `kinds` (names with default parameters, or built augmentations)."""
    normals = np.asarray(normals)
    if normals.ndim not in (3, 4) or len(normals) == 0:
        raise InvalidParamsError(f"normals must be a non-empty (N, H, W) or (N, H, W, C) array, "
                                 f"got shape {normals.shape}")
    check_image(normals[0], what="normal image")
    if n < 1:
        raise InvalidParamsError(f"n must be >= 1, got {n}")
    if not 0.0 <= defect_ratio <= 1.0:
        raise InvalidParamsError(f"defect_ratio must be in [0, 1], got {defect_ratio}")
    n_defects = math.floor(n * defect_ratio + 0.5)
    if n_defects and not kinds:
        raise InvalidParamsError("kinds must name at least one defect augmentation when defect_ratio > 0")
    augmentations = [build_augmentation(k) if isinstance(k, str) else k for k in kinds]
    labels = np.zeros(n, np.int64)
    labels[:n_defects] = 1 + np.arange(n_defects) % max(1, len(augmentations))
    labels = rng.permutation(labels)
    sources = rng.integers(0, len(normals), size=n)
    images = normals[sources].copy()
    masks = np.zeros((n, *normals.shape[1:3]), bool)
    for i in np.flatnonzero(labels):
        images[i], masks[i] = augmentations[labels[i] - 1].apply(images[i], rng)
    return DefectDataset(images, labels, sources, masks, ("normal", *(a.name for a in augmentations)))


def make_textures(n: int, size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """`n` grey uint8 surface images (n, H, W) of brushed metal: streaks along a near-axis direction, fine
    grain, a lighting gradient and slow shading variation."""
    rows, cols = (size, size) if isinstance(size, int) else size
    if n < 1 or min(rows, cols) < MIN_SIZE:
        raise InvalidParamsError(f"need n >= 1 and a size of at least {MIN_SIZE}, got n={n}, size={size}")
    out = np.empty((n, rows, cols), np.uint8)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    for i in range(n):
        streaks = cv2.GaussianBlur(rng.standard_normal((rows, cols)).astype(np.float32), (0, 0),
                                   sigmaX=rng.uniform(3.0, 8.0), sigmaY=0.7)
        direction = 90.0 * rng.integers(2) + rng.uniform(-10.0, 10.0)
        turn = cv2.getRotationMatrix2D(((cols - 1) / 2, (rows - 1) / 2), direction, 1.0)
        streaks = cv2.warpAffine(streaks, turn, (cols, rows), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        shading = cv2.GaussianBlur(rng.standard_normal((rows, cols)).astype(np.float32), (0, 0),
                                   sigmaX=max(rows, cols) / 4)
        light = rng.uniform(0.0, 2.0 * math.pi)
        ramp = (x * math.cos(light) + y * math.sin(light)) / max(rows, cols)
        surface = (rng.uniform(0.55, 0.75) + rng.uniform(0.05, 0.15) * (ramp - ramp.mean())
                   + 0.06 * streaks / (streaks.std() + 1e-6) + 0.03 * shading / (shading.std() + 1e-6)
                   + 0.01 * rng.standard_normal((rows, cols)))
        out[i] = np.rint(np.clip(surface, 0.0, 1.0) * 255.0)
    return out
