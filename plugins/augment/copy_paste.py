"""Copy-paste augmentation: real defect patches, rotated and scaled, alpha-blended onto normal images.

After Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation",
CVPR 2021: pasting real object (here: defect) cut-outs onto other images at random places.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import AfterValidator, Field

from plugins.augment.base import (
    AUGMENTATIONS,
    WEIGHT_EPS,
    AugmentParams,
    Augmentation,
    InvalidImageError,
    PatchLoadError,
    PixelRange,
    check_image,
    ordered_range,
    to_unit,
)
from plugins.strategies import InvalidParamsError

PATCH_SUFFIX, MASK_SUFFIX = "_patch.png", "_mask.png"
_LUMA_RGB = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma weights

Scale = Annotated[float, Field(gt=0.0, le=16.0)]
Degrees = Annotated[float, Field(ge=-360.0, le=360.0)]
ScaleRange = Annotated[tuple[Scale, Scale], AfterValidator(ordered_range)]
AngleRange = Annotated[tuple[Degrees, Degrees], AfterValidator(ordered_range)]


@dataclass(frozen=True)
class DefectPatch:
    """A defect cut-out: HxWxC float32 pixels and HxW float32 alpha, both in [0, 1], and its origin."""

    pixels: np.ndarray
    alpha: np.ndarray
    source: str


def make_patch(patch: np.ndarray, mask: np.ndarray, source: str) -> DefectPatch:
    """A validated (patch, mask) pair; the mask is bool, uint8 0..255 or float in [0, 1], not all zero."""
    try:
        check_image(patch, what=f"patch {source}", min_size=1)
    except InvalidImageError as exc:
        raise PatchLoadError(str(exc)) from None
    mask = np.asarray(mask)
    if mask.shape != patch.shape[:2]:
        raise PatchLoadError(f"mask of {source} is {mask.shape}, the patch is {patch.shape[:2]}: "
                             "they must match")
    if mask.dtype == np.bool_:
        alpha = mask.astype(np.float32)
    elif mask.dtype == np.uint8:
        alpha = mask.astype(np.float32) / 255.0
    elif mask.dtype in (np.float32, np.float64) and mask.min() >= 0 and mask.max() <= 1:  # False for NaN
        alpha = mask.astype(np.float32)
    else:
        raise PatchLoadError(f"mask of {source} must be bool, uint8 (0..255) or float in [0, 1]; "
                             f"got {mask.dtype}")
    if not (alpha >= WEIGHT_EPS).any():
        raise PatchLoadError(f"mask of {source} is empty: no pixel of the patch would be pasted")
    return DefectPatch(to_unit(patch), alpha, source)


def read_pair(patch_path: Path, channel_order: str) -> DefectPatch:
    """`<name>_patch.png` and its `<name>_mask.png`, read with OpenCV; colour in `channel_order`."""
    mask_path = patch_path.with_name(patch_path.name[: -len(PATCH_SUFFIX)] + MASK_SUFFIX)
    if not mask_path.is_file():
        raise PatchLoadError(f"{patch_path}: no mask {mask_path.name} beside it "
                             f"(each <name>{PATCH_SUFFIX} needs a <name>{MASK_SUFFIX})")
    patch = cv2.imread(str(patch_path), cv2.IMREAD_UNCHANGED)
    if patch is None:
        raise PatchLoadError(f"{patch_path}: OpenCV cannot read it as an image")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise PatchLoadError(f"{mask_path}: OpenCV cannot read it as an image")
    if patch.ndim == 3 and patch.shape[2] == 4:
        patch = patch[..., :3]  # the defect's shape comes from the mask file, not the PNG's alpha
    if patch.ndim == 3 and patch.shape[2] == 3 and channel_order == "rgb":
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)
    return make_patch(np.ascontiguousarray(patch), mask, str(patch_path))


def load_patches(directory: Path, channel_order: str, skip_bad: bool) -> list[DefectPatch]:
    """The `<name>_patch.png` + `<name>_mask.png` pairs in `directory`; bad pairs raise (skip_bad: warn)."""
    if not directory.is_dir():
        raise PatchLoadError(f"{directory}: not a directory of defect patches")
    patches = []
    for path in sorted(directory.glob(f"*{PATCH_SUFFIX}")):
        try:
            patches.append(read_pair(path, channel_order))
        except PatchLoadError as exc:
            if not skip_bad:
                raise
            warnings.warn(f"skipping defect patch: {exc}", stacklevel=3)
    if not patches:
        raise PatchLoadError(f"{directory}: no usable defect patches (expected <name>{PATCH_SUFFIX} "
                             f"+ <name>{MASK_SUFFIX} pairs)")
    return patches


def match_channels(pixels: np.ndarray, channels: int, channel_order: str) -> np.ndarray:
    """HxWxC pixels converted to `channels` (1 or 3): luma for colour to grey, copies for grey to colour."""
    if pixels.shape[2] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=2)
    weights = _LUMA_RGB if channel_order == "rgb" else _LUMA_RGB[::-1]
    return (pixels @ weights)[..., None]


def warp_patch(pixels: np.ndarray, alpha: np.ndarray, scale: float, angle: float, max_size: tuple[int, int],
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate (degrees, counter-clockwise) and scale a patch into its bounding box, shrunk further to fit
    within max_size = (rows, cols); returns alpha-premultiplied pixels and the alpha, with alpha < WEIGHT_EPS
    cleared."""
    ph, pw = alpha.shape
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    extent_w, extent_h = pw * abs(cos) + ph * abs(sin), pw * abs(sin) + ph * abs(cos)
    fit = scale * min(1.0, max_size[1] / (scale * extent_w), max_size[0] / (scale * extent_h))
    out_w = min(max_size[1], max(1, math.ceil(fit * extent_w - 1e-6)))
    out_h = min(max_size[0], max(1, math.ceil(fit * extent_h - 1e-6)))
    premult = pixels * alpha[..., None]
    sx = sy = fit
    if fit < 1.0:  # shrink by area averaging first so thin defects survive large reductions
        rw, rh = max(1, round(pw * fit)), max(1, round(ph * fit))
        premult = cv2.resize(premult, (rw, rh), interpolation=cv2.INTER_AREA).reshape(rh, rw, -1)
        alpha = cv2.resize(alpha, (rw, rh), interpolation=cv2.INTER_AREA)
        sx, sy, pw, ph = fit * pw / rw, fit * ph / rh, rw, rh
    linear = np.array([[cos * sx, sin * sy], [-sin * sx, cos * sy]])
    centre_in = np.array([(pw - 1) / 2.0, (ph - 1) / 2.0])
    centre_out = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
    matrix = np.hstack([linear, (centre_out - linear @ centre_in)[:, None]])
    channels = premult.shape[2]
    premult = cv2.warpAffine(premult, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(out_h, out_w, channels)
    alpha = cv2.warpAffine(alpha, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    keep = alpha >= WEIGHT_EPS
    premult = np.where(keep[..., None], premult, 0.0).astype(np.float32)
    return premult, np.where(keep, alpha, 0.0).astype(np.float32)


def paste(unit: np.ndarray, premult: np.ndarray, alpha: np.ndarray, top: int, left: int) -> np.ndarray:
    """patch * alpha + image * (1 - alpha) on the rows/cols starting at (top, left); a new array."""
    out = unit.copy()
    h, w = alpha.shape
    region = out[top:top + h, left:left + w]
    out[top:top + h, left:left + w] = premult + region * (1.0 - alpha[..., None])
    return out


@AUGMENTATIONS.register("copy_paste")
class CopyPaste(Augmentation):
    """Paste randomly rotated and scaled real defect patches at random places (see module docstring).

    Patches come from `directory` (`<name>_patch.png` + `<name>_mask.png` pairs, read with OpenCV) and/or
    from in-memory (patch, mask) pairs given to the constructor; only the directory is part of `config()`.
    """

    class Params(AugmentParams):
        directory: str | None = Field(None, description="folder of <name>_patch.png + <name>_mask.png pairs")
        skip_bad: bool = Field(False, description="warn and skip bad or unpaired patches instead of raising")
        channel_order: Literal["rgb", "bgr"] = Field(
            "rgb", description="channel order of the colour images to augment (patch files are read as BGR)")
        scale: ScaleRange = Field((0.5, 1.5), description="patch scale factor (low, high)")
        rotation: AngleRange = Field((0.0, 360.0), description="rotation in degrees (low, high)")
        count: PixelRange = Field((1, 1), description="patches pasted per image (low, high)")

    def __init__(self, patches: Sequence[tuple[np.ndarray, np.ndarray]] = (), **params: Any) -> None:
        super().__init__(**params)
        self.patches = [make_patch(patch, mask, f"pair {i}") for i, (patch, mask) in enumerate(patches)]
        if self.params.directory is not None:
            self.patches += load_patches(Path(self.params.directory), self.params.channel_order,
                                         self.params.skip_bad)
        if not self.patches:
            raise InvalidParamsError("copy_paste needs defect patches: give directory=... "
                                     "or (patch, mask) pairs")

    def render(self, unit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Paste `count` patches, each at a random scale, rotation and position fully inside the image."""
        h, w, c = unit.shape
        p = self.params
        footprint = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(*p.count, endpoint=True))):
            patch = self.patches[int(rng.integers(len(self.patches)))]
            scale, angle = rng.uniform(*p.scale), rng.uniform(*p.rotation)
            pixels = match_channels(patch.pixels, c, p.channel_order)
            premult, alpha = warp_patch(pixels, patch.alpha, scale, angle, (h, w))
            top = int(rng.integers(0, h - alpha.shape[0], endpoint=True))
            left = int(rng.integers(0, w - alpha.shape[1], endpoint=True))
            unit = paste(unit, premult, alpha, top, left)
            footprint[top:top + alpha.shape[0], left:left + alpha.shape[1]] |= alpha > 0
        return unit, footprint
