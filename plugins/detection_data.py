"""A synthetic object-detection data set of surface defects with exact ground-truth boxes.

Each image is a procedural surface texture of one background family; most images get 1..max_defects
scratches, stains or dents drawn by plugins.augment.defects, each boxed by the tight bounding box of the
pixels it changed (plugins.augment.box_paste.draw_boxed), the rest stay defect-free (no box). Train and test
are drawn from disjoint background families, so a detector cannot score by remembering a texture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from plugins.augment.base import Augmentation, build_augmentation
from plugins.augment.box_paste import DRAWERS, Exactness, draw_boxed
from plugins.augment.transforms import make_textures
from plugins.boxes import box_targets
from plugins.datasets import DatasetError
from plugins.registry import Registry

Family = Callable[[int, int, np.random.Generator], np.ndarray]


def _smooth(rng: np.random.Generator, rows: int, cols: int, sigma_x: float, sigma_y: float | None = None,
            ) -> np.ndarray:
    """Gaussian-blurred white noise with unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal((rows, cols)).astype(np.float32), (0, 0), sigmaX=sigma_x,
                             sigmaY=sigma_x if sigma_y is None else sigma_y)
    return noise / (noise.std() + 1e-6)


def _grid(rows: int, cols: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by `angle` radians: (along, across)."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    return x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)


def _tinted(lum: np.ndarray, tint: np.ndarray) -> np.ndarray:
    return np.clip(lum[..., None] * tint[None, None, :].astype(np.float32), 0.0, 1.0)


def brushed_metal(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Grey metal with fine polishing streaks along a near-axis direction (plugins.augment.transforms)."""
    grey = make_textures(1, (rows, cols), rng)[0].astype(np.float32) / 255.0
    return _tinted(0.12 + 0.9 * grey, 1.0 + rng.uniform(-0.04, 0.04, 3))


def wood_grain(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Light wood: warped growth rings with fibres along the grain, in a brown tint."""
    along, across = _grid(rows, cols, rng.uniform(0.0, math.pi))
    rings = across + rng.uniform(3.0, 8.0) * _smooth(rng, rows, cols, max(rows, cols) / 6)
    wave = 0.5 + 0.5 * np.sin(2.0 * math.pi * rings / rng.uniform(5.0, 12.0))
    fibres = _smooth(rng, rows, cols, 0.6)
    lum = rng.uniform(0.68, 0.82) + 0.12 * (wave ** rng.uniform(1.0, 3.0) - 0.5) + 0.025 * fibres
    return _tinted(lum, np.array([1.0, rng.uniform(0.8, 0.88), rng.uniform(0.6, 0.7)]))


def fabric_weave(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A plain weave: warp and weft threads crossing over and under, in a random pastel colour."""
    along, across = _grid(rows, cols, rng.uniform(-0.2, 0.2))
    period = rng.uniform(4.0, 8.0)
    warp, weft = np.cos(math.pi * along / period) ** 2, np.cos(math.pi * across / period) ** 2
    over = np.sin(math.pi * along / period) * np.sin(math.pi * across / period) > 0
    lum = 0.72 + 0.12 * (np.where(over, warp, weft) - 0.5) + 0.02 * _smooth(rng, rows, cols, 0.8)
    return _tinted(lum, rng.uniform(0.75, 1.15, 3))


def speckled_concrete(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Grey concrete: blotchy shading at two scales, grain, and sparse dark and light specks."""
    lum = (rng.uniform(0.6, 0.75) + 0.04 * _smooth(rng, rows, cols, max(rows, cols) / 10)
           + 0.03 * _smooth(rng, rows, cols, 1.5) + 0.015 * rng.standard_normal((rows, cols)))
    specks = (rng.random((rows, cols)) < rng.uniform(0.005, 0.02)) * rng.uniform(-0.15, 0.1, (rows, cols))
    lum = lum + cv2.GaussianBlur(specks.astype(np.float32), (0, 0), sigmaX=0.5)
    return _tinted(lum.astype(np.float32), np.array([1.0, rng.uniform(0.97, 1.0), rng.uniform(0.92, 0.98)]))


def gradient_noise(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth linear or radial blend of two light colours with camera-like pixel noise."""
    along, _ = _grid(rows, cols, rng.uniform(0.0, 2.0 * math.pi))
    if rng.random() < 0.5:
        t = (along - along.min()) / (np.ptp(along) + 1e-6)
    else:
        y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
        cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
        t = np.clip(np.hypot(y - cy, x - cx) / max(rows, cols), 0.0, 1.0)
    low, high = rng.uniform(0.5, 0.9, 3), rng.uniform(0.5, 0.9, 3)
    colour = low[None, None] * (1.0 - t[..., None]) + high[None, None] * t[..., None]
    noise = rng.uniform(0.005, 0.02) * rng.standard_normal((rows, cols, 1))
    return np.clip(colour + noise, 0.0, 1.0).astype(np.float32)


def machined_rings(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Turned metal: fine concentric tool rings around a centre (often off the image), with the bow-tie
    highlight of a lathe-finished face."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = rng.uniform(-0.5, 1.5) * rows, rng.uniform(-0.5, 1.5) * cols
    radius, theta = np.hypot(y - cy, x - cx), np.arctan2(y - cy, x - cx)
    rings = np.sin(2.0 * math.pi * radius / rng.uniform(2.0, 4.0))
    highlight = np.cos(2.0 * (theta - rng.uniform(0.0, math.pi)))
    lum = (rng.uniform(0.6, 0.72) + 0.03 * rings + rng.uniform(0.04, 0.1) * highlight
           + 0.01 * rng.standard_normal((rows, cols)))
    return _tinted(lum.astype(np.float32), 1.0 + rng.uniform(-0.03, 0.03, 3))


FAMILIES: dict[str, Family] = {f.__name__: f for f in (brushed_metal, wood_grain, fabric_weave,
                                                        speckled_concrete, gradient_noise, machined_rings)}
TRAIN_FAMILIES = ("brushed_metal", "wood_grain", "fabric_weave")
TEST_FAMILIES = ("speckled_concrete", "gradient_noise", "machined_rings")


def make_background(family: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) uint8 defect-free surface of the named background family."""
    if family not in FAMILIES:
        raise DatasetError(f"unknown background family {family!r}; available: {', '.join(FAMILIES)}")
    return np.rint(np.clip(FAMILIES[family](size, size, rng), 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class DetectionItem:
    """One image: its defect-free `background`, the `image` with defects, (k, 5) targets, undrawn count."""

    background: np.ndarray
    image: np.ndarray
    targets: np.ndarray
    undrawn: int


def draw_defects(background: np.ndarray, kinds: Sequence[tuple[int, Augmentation]], rng: np.random.Generator,
                 rule: Exactness) -> DetectionItem:
    """`background` with one defect per (class index, drawer) of `kinds` drawn in turn, each with its exact
    box; a defect that stays invisible, overlaps an earlier box beyond rule.max_iou or hides an earlier
    defect (rule.max_cover) in rule.attempts draws is left out and counted in `undrawn`."""
    image, rows, masks, undrawn = background, [], [], 0
    for label, drawer in kinds:
        drawn = draw_boxed(image, drawer, rng, np.asarray([r[1:] for r in rows]).reshape(-1, 4), masks, rule)
        if drawn is None:
            undrawn += 1
            continue
        image = drawn.image
        rows.append(np.array([label, *drawn.box], np.float32))
        masks.append(drawn.changed)
    return DetectionItem(background, image, np.asarray(rows, np.float32).reshape(-1, 5), undrawn)


@dataclass(frozen=True)
class DetectionDataset:
    """Train and test uint8 (N, H, W, 3) images with (k, 5) box targets (plugins.boxes.box_targets).

    `background_families` names the families of each split ("train", "test"), which never share one;
    `background_train` / `background_test` name each image's family; `undrawn` counts planned defects that
    could not be drawn visibly (see draw_defects).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    background_families: dict[str, tuple[str, ...]]
    background_train: np.ndarray
    background_test: np.ndarray
    undrawn: int = 0

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != np.uint8 or x.ndim != 4:
                raise DatasetError(f"{self.name}: x_{split} must be uint8 (N, H, W, C), "
                                   f"got {x.dtype} {x.shape}")
            if y.dtype != object or y.shape != (len(x),):
                raise DatasetError(f"{self.name}: y_{split} must be an object array of {len(x)} "
                                   "(k, 5) targets")

    @property
    def n_classes(self) -> int:
        """Number of defect classes (background is not one)."""
        return len(self.class_names)


class DetectionDefectsParams(BaseModel):
    """The settings of detection_defects (see it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_train: int = Field(ge=0, le=1_000_000)
    n_test: int = Field(ge=0, le=1_000_000)
    size: int = Field(128, ge=16, le=4096)
    seed: int = Field(0, ge=0)
    defect_free: float = Field(0.3, ge=0.0, le=1.0, description="share of images without any defect")
    max_defects: int = Field(3, ge=1, le=50, description="defects per defective image: 1..max_defects")
    classes: tuple[str, ...] = Field(DRAWERS, min_length=1, description="defect drawers, one class each")
    class_weights: tuple[float, ...] | None = Field(None, description="relative frequency of each class")
    defect_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="drawer parameters")
    train_families: tuple[str, ...] = Field(TRAIN_FAMILIES, min_length=1)
    test_families: tuple[str, ...] = Field(TEST_FAMILIES, min_length=1)
    exactness: Exactness = Field(default_factory=lambda: Exactness(max_iou=0.5))

    @model_validator(mode="after")
    def _consistent(self) -> DetectionDefectsParams:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct, got {list(self.classes)}")
        wrong = [c for c in self.classes if c not in DRAWERS]
        if wrong:
            raise ValueError(f"classes {wrong} are not defect drawers (only they give exact boxes); use "
                             f"{', '.join(DRAWERS)}")
        weights = self.class_weights
        if weights is not None and (len(weights) != len(self.classes) or min(weights) < 0
                                    or sum(weights) <= 0):
            raise ValueError("class_weights needs one non-negative weight per class, not all zero")
        unknown = sorted(set(self.train_families + self.test_families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown background families {unknown}; available: {', '.join(FAMILIES)}")
        shared = sorted(set(self.train_families) & set(self.test_families))
        if shared:
            raise ValueError(f"train and test must use different background families; both use {shared}")
        extra = sorted(set(self.defect_params) - set(self.classes))
        if extra:
            raise ValueError(f"defect_params names {extra}, which are not among classes {list(self.classes)}")
        return self


def _drawers(params: DetectionDefectsParams) -> list[Augmentation]:
    out = []
    for name in params.classes:
        try:
            out.append(build_augmentation(name, **params.defect_params.get(name, {})))
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"class {name!r}: {exc}") from None
    return out


def _split(params: DetectionDefectsParams, drawers: list[Augmentation], n: int, families: tuple[str, ...],
           split: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(images, targets, family of each image, undrawn) of one split; image i draws from (seed, split, i)."""
    plan = np.random.default_rng([params.seed, split])
    family = plan.integers(len(families), size=n)
    free = np.zeros(n, bool)
    free[:math.floor(n * params.defect_free + 0.5)] = True
    free = plan.permutation(free)
    counts = np.where(free, 0, plan.integers(1, params.max_defects, endpoint=True, size=n))
    weights = None if params.class_weights is None else np.asarray(params.class_weights)
    weights = None if weights is None else weights / weights.sum()
    labels = plan.choice(len(drawers), size=int(counts.sum()), p=weights)
    images = np.empty((n, params.size, params.size, 3), np.uint8)
    rows, undrawn, start = [], 0, 0
    for i in range(n):
        rng = np.random.default_rng([params.seed, split, i])
        kinds = [(int(c), drawers[c]) for c in labels[start:start + counts[i]]]
        start += counts[i]
        background = make_background(families[family[i]], params.size, rng)
        item = draw_defects(background, kinds, rng, params.exactness)
        images[i], undrawn = item.image, undrawn + item.undrawn
        rows.append(item.targets)
    return images, box_targets(rows), np.asarray([families[f] for f in family], dtype=str), undrawn


def detection_defects(n_train: int, n_test: int, size: int = 128, seed: int = 0, defect_free: float = 0.3,
                      max_defects: int = 3, classes: Sequence[str] = DRAWERS,
                      **options: Any) -> DetectionDataset:
    """Synthetic surfaces with scratches, stains and dents and their exact boxes (module docstring);
    `options` are the other DetectionDefectsParams (class_weights, defect_params, train_families, ...)."""
    try:
        params = DetectionDefectsParams(n_train=n_train, n_test=n_test, size=size, seed=seed,
                                        defect_free=defect_free, max_defects=max_defects,
                                        classes=tuple(classes), **options)
    except ValidationError as exc:
        raise DatasetError(f"detection_defects: {exc}") from None
    drawers = _drawers(params)
    x_train, y_train, f_train, u_train = _split(params, drawers, params.n_train, params.train_families, 0)
    x_test, y_test, f_test, u_test = _split(params, drawers, params.n_test, params.test_families, 1)
    return DetectionDataset("detection_defects", x_train, y_train, x_test, y_test, list(params.classes),
                            {"train": params.train_families, "test": params.test_families}, f_train, f_test,
                            u_train + u_test)


DETECTION_DATASETS: Registry[Callable[..., DetectionDataset]] = Registry("detection dataset")
DETECTION_DATASETS.register("detection_defects")(detection_defects)


def load_detection_dataset(name: str, **kwargs: Any) -> DetectionDataset:
    """Load the detection data set registered as `name` with the loader's keyword arguments."""
    return DETECTION_DATASETS.get(name)(**kwargs)
