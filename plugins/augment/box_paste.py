"""Box-level augmentation for object detection: defects drawn or pasted with exact ground-truth boxes.

A box here is never guessed from a drawer's parameters: it is the tight bounding box of the pixels whose
value actually changed (before vs after, in the image's own dtype), in relative corner form with pixel
edges, x0 = first changed column / W and x1 = (last changed column + 1) / W (plugins.boxes). A soft
defect's faint tail (a change below `halo`, 0.01 of full scale: two or three grey levels) is undone outside
the box of the stronger change, so the box is not inflated by an invisible halo and still bounds every
changed pixel. A change too faint to see (fewer than `min_pixels` pixels changed by at least `min_contrast`
of full scale) is redrawn or dropped, never counted as a box.

Copy-paste (the seeds' recipe, after Ghiasi et al., CVPR 2021): a labelled box is cut from its image with a
soft mask, the pixels that stand out from a local background estimate (the box filled in smoothly from a ring
of pixels around it, normalised convolution); the cut-out is flipped and scaled at random and alpha-blended
at a random place of a defect-free image (or of any image, away from its boxes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, ValidationError

from plugins.augment.base import (
    WEIGHT_EPS,
    AugmentParams,
    Augmentation,
    InvalidImageError,
    PixelRange,
    check_image,
    from_unit,
    to_unit,
)
from plugins.augment.copy_paste import ScaleRange, paste
from plugins.boxes import box_targets, iou_matrix
from plugins.strategies import InvalidParamsError

# Defect drawers: augmentations whose change is local, so the pixels they change are the defect and its box.
DRAWERS = ("scratch", "stain", "dent")


class Exactness(AugmentParams):
    """When a drawn or pasted defect counts as a box, and how close it may come to the boxes already there."""

    min_pixels: int = Field(4, ge=1, description="a box needs this many pixels changed by min_contrast")
    min_contrast: float = Field(0.04, ge=0.0, le=1.0, description="visible change, fraction of full scale")
    max_iou: float = Field(0.1, ge=0.0, le=1.0, description="largest overlap with an existing box: IoU, and "
                                                            "the share of the smaller box covered")
    max_cover: float = Field(0.5, ge=0.0, le=1.0, description="largest share of an earlier defect's "
                                                              "changed pixels a new one may change")
    attempts: int = Field(20, ge=1, le=1000, description="tries (new random draw each) before giving up")
    halo: float = Field(0.01, ge=0.0, le=1.0, description="the box bounds the pixels changed by at least "
                                                          "this (fraction of full scale); fainter change "
                                                          "outside it is undone (0: box every change)")


class PasteParams(Exactness):
    """Box copy-paste: where cut-outs go, how they are changed, how they are cut."""

    scale: ScaleRange = Field((0.8, 1.25), description="cut-out scale factor (low, high)")
    flip: bool = Field(True, description="flip each cut-out left-right and up-down at random")
    onto: Literal["defect_free", "any"] = Field(
        "defect_free", description="paste onto defect-free images (no box) only, or onto any image away from "
                                   "its boxes (max_iou)")
    per_image: PixelRange = Field((1, 1), description="cut-outs pasted per synthetic image (low, high)")
    margin: int = Field(4, ge=1, le=64, description="width in pixels of the ring around a box that the local "
                                                    "background estimate is made from")


@dataclass(frozen=True)
class Drawn:
    """One defect drawn onto an image: the new image, its exact box (4,) and the (H, W) pixels it changed."""

    image: np.ndarray
    box: np.ndarray
    changed: np.ndarray


@dataclass(frozen=True)
class Cutout:
    """A defect cut from a labelled box: (h, w, C) float pixels in [0, 1], (h, w) alpha, class, origin."""

    pixels: np.ndarray
    alpha: np.ndarray
    label: int
    image: int
    box: int


@dataclass(frozen=True)
class Pasted:
    """Synthetic items made by paste_defects; unpacks as (images, targets).

    `recipients` is the real image each item was pasted onto; `reason` says why fewer than `requested`
    items were made ('' when all were).
    """

    images: np.ndarray
    targets: np.ndarray
    recipients: np.ndarray
    requested: int
    reason: str = ""

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.images, self.targets))

    @property
    def made(self) -> int:
        """Items made."""
        return int(len(self.images))


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(H, W) bool: where any channel of `after` differs from `before` (same shape and dtype)."""
    diff = np.asarray(before) != np.asarray(after)
    return diff.any(axis=-1) if diff.ndim == 3 else diff


def pixel_box(mask: np.ndarray) -> np.ndarray:
    """(4,) float32 relative x0, y0, x1, y1 of the pixel edges around the True pixels of an (H, W) mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise ValueError("pixel_box of an empty mask: nothing changed")
    h, w = mask.shape
    return np.array([cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h], np.float32)


def pixel_rect(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), end exclusive, of the pixels a relative box covers (at least one each)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    c0 = min(width - 1, max(0, math.floor(x0 * width + 1e-3)))
    r0 = min(height - 1, max(0, math.floor(y0 * height + 1e-3)))
    c1 = max(c0 + 1, min(width, math.ceil(x1 * width - 1e-3)))
    r1 = max(r0 + 1, min(height, math.ceil(y1 * height - 1e-3)))
    return r0, r1, c0, c1


def overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(k,) the larger of IoU and intersection over the smaller area, between `box` and each of `boxes`."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0)
    box = np.asarray(box, dtype=np.float64).reshape(1, 4)
    iou = iou_matrix(box, boxes)[0]
    lt, rb = np.maximum(box[:, :2], boxes[:, :2]), np.minimum(box[:, 2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=1)
    areas = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None), axis=1)
    smaller = np.minimum(areas, float(np.prod(np.clip(box[0, 2:] - box[0, :2], 0.0, None))))
    return np.maximum(iou, np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 0.0))


def visible(before: np.ndarray, after: np.ndarray, rule: Exactness) -> bool:
    """True when at least rule.min_pixels pixels changed by at least rule.min_contrast (largest channel)."""
    delta = np.abs(to_unit(np.asarray(after)) - to_unit(np.asarray(before))).max(axis=-1)
    return int(np.count_nonzero(delta >= max(rule.min_contrast, 1e-9))) >= rule.min_pixels


def settle(before: np.ndarray, after: np.ndarray, rule: Exactness) -> Drawn | None:
    """`after` with changes outside the box of the rule.halo-strong change undone, that box and the changed
    pixels; None when nothing visible changed (see visible)."""
    delta = np.abs(to_unit(np.asarray(after)) - to_unit(np.asarray(before))).max(axis=-1)
    strong = (delta >= rule.halo) & (delta > 0) if rule.halo > 0 else changed_pixels(before, after)
    if not strong.any():
        return None
    box = pixel_box(strong)
    r0, r1, c0, c1 = pixel_rect(box, *strong.shape)
    inside = np.zeros(strong.shape, bool)
    inside[r0:r1, c0:c1] = True
    kept = np.where(inside if after.ndim == 2 else inside[..., None], after, before)
    if not visible(before[r0:r1, c0:c1], kept[r0:r1, c0:c1], rule):
        return None
    return Drawn(kept, box, changed_pixels(before, kept))


def draw_boxed(image: np.ndarray, augmentation: Augmentation, rng: np.random.Generator,
               boxes: np.ndarray | None = None, masks: Sequence[np.ndarray] = (),
               rule: Exactness | None = None) -> Drawn | None:
    """One visible defect drawn by `augmentation` with its exact box, away from `boxes` (max_iou) and not
    hiding the earlier defects' changed `masks` (max_cover); None when rule.attempts draws all fail."""
    rule = rule or Exactness()
    avoid = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for _ in range(rule.attempts):
        drawn = settle(image, augmentation.apply(image, rng)[0], rule)
        if drawn is None or (overlap(drawn.box, avoid) > rule.max_iou).any():
            continue
        changed = drawn.changed
        if any(np.count_nonzero(changed & m) > rule.max_cover * max(1, np.count_nonzero(m)) for m in masks):
            continue
        return drawn
    return None


def local_background(crop: np.ndarray, known: np.ndarray, sigma: float) -> np.ndarray:
    """(h, w, C) smooth estimate of `crop` from its `known` pixels only (normalised Gaussian convolution)."""
    weight = known.astype(np.float32)
    num = cv2.GaussianBlur(crop * weight[..., None], (0, 0), sigmaX=sigma).reshape(crop.shape)
    den = cv2.GaussianBlur(weight, (0, 0), sigmaX=sigma)[..., None]
    fallback = crop[known].mean(axis=0) if known.any() else crop.reshape(-1, crop.shape[2]).mean(axis=0)
    return np.where(den > 1e-4, num / np.maximum(den, 1e-4), fallback).astype(np.float32)


def cut_defect(unit: np.ndarray, targets: np.ndarray, index: int, margin: int, min_contrast: float,
               image: int = 0) -> Cutout | None:
    """Box `index` of (k, 5) `targets` cut from an (H, W, C) [0, 1] image with a soft mask (module
    docstring); None when no pixel of it stands out from the local background."""
    h, w, _ = unit.shape
    label, box = int(targets[index, 0]), targets[index, 1:]
    r0, r1, c0, c1 = pixel_rect(box, h, w)
    o0, o1, p0, p1 = max(0, r0 - margin), min(h, r1 + margin), max(0, c0 - margin), min(w, c1 + margin)
    crop = unit[o0:o1, p0:p1]
    inner = np.zeros(crop.shape[:2], bool)
    inner[r0 - o0:r1 - o0, c0 - p0:c1 - p0] = True
    known = ~inner
    for j, other in enumerate(targets):  # other defects in the ring are not background
        if j != index:
            q0, q1, s0, s1 = pixel_rect(other[1:], h, w)
            known[max(0, q0 - o0):max(0, q1 - o0), max(0, s0 - p0):max(0, s1 - p0)] = False
    if not known.any():
        return None
    background = local_background(crop, known, sigma=max(2.0, 0.5 * max(r1 - r0, c1 - c0)))
    distance = np.abs(crop - background).max(axis=-1)
    texture = float(np.percentile(distance[known], 90))  # how far plain background strays from the estimate
    width = max(texture, min_contrast, 1e-3)
    alpha = np.clip((distance - texture) / width, 0.0, 1.0).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha * inner, (0, 0), sigmaX=0.7)[r0 - o0:r1 - o0, c0 - p0:c1 - p0]
    alpha = np.where(alpha >= WEIGHT_EPS, alpha, 0.0).astype(np.float32)
    if alpha.max() < 0.5:
        return None
    return Cutout(crop[r0 - o0:r1 - o0, c0 - p0:c1 - p0].copy(), alpha, label, image, index)


def transform_cutout(cutout: Cutout, rng: np.random.Generator, params: PasteParams,
                     max_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Premultiplied pixels and alpha of a cut-out flipped and scaled at random, shrunk to fit max_size."""
    pixels, alpha = cutout.pixels, cutout.alpha
    if params.flip and rng.random() < 0.5:
        pixels, alpha = pixels[:, ::-1], alpha[:, ::-1]
    if params.flip and rng.random() < 0.5:
        pixels, alpha = pixels[::-1], alpha[::-1]
    h, w = alpha.shape
    scale = float(rng.uniform(*params.scale))
    scale = min(scale, max_size[0] / h, max_size[1] / w)
    out_h, out_w = max(1, min(max_size[0], round(h * scale))), max(1, min(max_size[1], round(w * scale)))
    premult = np.ascontiguousarray(pixels * alpha[..., None], dtype=np.float32)
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    if (out_h, out_w) != (h, w):
        flags = cv2.INTER_AREA if out_h * out_w < h * w else cv2.INTER_LINEAR
        premult = cv2.resize(premult, (out_w, out_h), interpolation=flags).reshape(out_h, out_w, -1)
        alpha = cv2.resize(alpha, (out_w, out_h), interpolation=flags)
    keep = alpha >= WEIGHT_EPS
    premult = np.where(keep[..., None], premult, 0.0).astype(np.float32)
    return premult, np.where(keep, alpha, 0.0).astype(np.float32)


def check_detection_set(images: np.ndarray, targets: np.ndarray) -> None:
    """InvalidImageError unless images is (N, H, W[, C]) and targets has N (k, 5) rows."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or not len(images):
        raise InvalidImageError(f"images must be a non-empty (N, H, W) or (N, H, W, C) array, "
                                f"got {images.shape}")
    check_image(images[0], what="a detection image")
    if len(targets) != len(images):
        raise InvalidImageError(f"{len(images)} images but {len(targets)} targets")
    for i, rows in enumerate(targets):
        if np.asarray(rows).ndim != 2 or np.asarray(rows).shape[1] != 5:
            raise InvalidImageError(f"target {i} must be a (k, 5) [class, x0, y0, x1, y1] array, "
                                    f"got shape {np.asarray(rows).shape}")


def cutouts(images: np.ndarray, targets: Sequence[np.ndarray], classes: Sequence[int] | None, margin: int,
            min_contrast: float) -> list[Cutout]:
    """Every usable cut-out of the boxes whose class is in `classes` (None: every box); a box that overlaps
    another box of its image is not cut (its cut-out would carry part of another defect)."""
    wanted = None if classes is None else {int(c) for c in classes}
    out = []
    for i, rows in enumerate(targets):
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
        for j in range(len(rows)):
            alone = not (overlap(rows[j, 1:], np.delete(rows, j, axis=0)[:, 1:]) > 0).any()
            if alone and (wanted is None or int(rows[j, 0]) in wanted):
                cut = cut_defect(to_unit(images[i]), rows, j, margin, min_contrast, image=i)
                if cut is not None:
                    out.append(cut)
    return out


def paste_one(image: np.ndarray, boxes: np.ndarray, cut: Cutout, rng: np.random.Generator,
              params: PasteParams) -> tuple[np.ndarray, np.ndarray] | None:
    """`image` with `cut` pasted at a random place and its exact box, or None when the place overlaps
    `boxes` beyond params.max_iou or the pasted defect is not visible."""
    h, w = image.shape[:2]
    premult, alpha = transform_cutout(cut, rng, params, (h, w))
    ph, pw = alpha.shape
    top, left = int(rng.integers(0, h - ph, endpoint=True)), int(rng.integers(0, w - pw, endpoint=True))
    place = np.array([left / w, top / h, (left + pw) / w, (top + ph) / h])
    if (overlap(place, boxes) > params.max_iou).any():
        return None
    drawn = settle(image, from_unit(paste(to_unit(image), premult, alpha, top, left), image), params)
    if drawn is None or (overlap(drawn.box, boxes) > params.max_iou).any():
        return None
    return drawn.image, drawn.box


def paste_params(**options: Any) -> PasteParams:
    """PasteParams from keyword options; InvalidParamsError naming what is wrong."""
    try:
        return PasteParams(**options)
    except ValidationError as exc:
        raise InvalidParamsError(f"invalid parameters for box copy-paste: {exc}") from None


def paste_defects(images: np.ndarray, targets: np.ndarray, n: int, rng: np.random.Generator,
                  classes: Sequence[int] | None = None, scale: tuple[float, float] = (0.8, 1.25),
                  **options: Any) -> Pasted:
    """`n` synthetic items: labelled defects of `classes` (indices; None: all) cut from `images` and pasted,
    flipped and scaled, onto defect-free images, each with its exact new box; `options` are the other
    PasteParams (onto="any" pastes onto every image, away from its boxes)."""
    params = paste_params(scale=scale, **options)
    if n < 0:
        raise InvalidParamsError(f"n must be >= 0, got {n}")
    check_detection_set(images, targets)
    images = np.asarray(images)
    rows = [np.asarray(t, dtype=np.float32).reshape(-1, 5) for t in targets]

    def none(reason: str) -> Pasted:
        return Pasted(images[:0], box_targets([]), np.zeros(0, np.int64), n, reason)

    if n == 0:
        return none("")
    recipients = np.flatnonzero([len(r) == 0 for r in rows]) if params.onto == "defect_free" \
        else np.arange(len(images))
    if not len(recipients):
        return none("no defect-free image (no box) to paste onto")
    cuts = cutouts(images, rows, classes, params.margin, params.min_contrast)
    if not cuts:
        which = "any class" if classes is None else f"classes {sorted(int(c) for c in classes)}"
        return none(f"no labelled box of {which} stands out from its background to be copied")
    out_x, out_y, out_r = [], [], []
    for _ in range(n):
        made = None
        for _ in range(params.attempts):
            r = int(recipients[rng.integers(len(recipients))])
            image, boxes = images[r], rows[r]
            added: list[np.ndarray] = []
            for _ in range(int(rng.integers(*params.per_image, endpoint=True))):
                cut = cuts[int(rng.integers(len(cuts)))]
                taken = np.vstack([boxes[:, 1:], *[a[None, 1:] for a in added]])
                done = paste_one(image, taken, cut, rng, params)
                if done is not None:
                    image = done[0]
                    added.append(np.array([cut.label, *done[1]], np.float32))
            if added:
                made = (image, np.vstack([boxes, *[a[None] for a in added]]), r)
                break
        if made is not None:
            out_x.append(made[0])
            out_y.append(made[1])
            out_r.append(made[2])
    if not out_x:
        return none(f"no cut-out found a free, visible place in {params.attempts} attempts per item")
    reason = "" if len(out_x) == n else f"{n - len(out_x)} items found no free, visible place"
    return Pasted(np.stack(out_x).astype(images.dtype), box_targets(out_y), np.asarray(out_r, np.int64), n,
                  reason)
