"""Synthetic surface defects drawn onto normal images: scratches, stains and dents.

Sizes are in pixels and are clipped to the image, so any image of at least 8x8 works; intensities,
opacities and depths are fractions of the full scale, so one setting fits uint8, uint16 and float images.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field

from plugins.augment.base import (
    AUGMENTATIONS,
    WEIGHT_EPS,
    AugmentParams,
    Augmentation,
    PixelRange,
    UnitRange,
)

_SHIFT = 4  # cv2 sub-pixel bits for line end points
_ONE = 1 << _SHIFT


def fit_radius(radius: int, height: int, width: int) -> int:
    """`radius` clipped so that a disc of it fits inside a height x width image."""
    return max(1, min(radius, (min(height, width) - 1) // 2))


def inside_centre(rng: np.random.Generator, height: int, width: int, margin: int) -> tuple[int, int]:
    """A random (row, col) at least `margin` pixels from every border (the middle when none is)."""
    rows = (margin, height - 1 - margin) if height - 1 >= 2 * margin else ((height - 1) // 2,) * 2
    cols = (margin, width - 1 - margin) if width - 1 >= 2 * margin else ((width - 1) // 2,) * 2
    return int(rng.integers(*rows, endpoint=True)), int(rng.integers(*cols, endpoint=True))


def blend(unit: np.ndarray, weight: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """unit * (1 - weight) + colour * weight, with an HxW weight and a per-channel colour."""
    w = weight[..., None]
    return unit * (1.0 - w) + colour.astype(np.float32) * w


def footprint_of(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weight with values below WEIGHT_EPS set to zero, and where it is non-zero."""
    footprint = weight >= WEIGHT_EPS
    return np.where(footprint, weight, 0.0).astype(np.float32), footprint


def _draw(rng: np.random.Generator, span: tuple[float, float], size: int | None = None) -> np.ndarray:
    return rng.uniform(span[0], span[1], size=size)


@AUGMENTATIONS.register("scratch")
class Scratch(Augmentation):
    """A thin dark straight line at a random position and angle (a tool or handling scratch)."""

    class Params(AugmentParams):
        length: PixelRange = Field((8, 64), description="scratch length in pixels (low, high)")
        width: PixelRange = Field((1, 3), description="line width in pixels (low, high); at most a quarter "
                                                      "of the shorter image side")
        intensity: UnitRange = Field((0.05, 0.3), description="colour of the scratch per channel, as a "
                                                              "fraction of full scale (low, high)")
        antialias: bool = Field(True, description="draw anti-aliased (soft) edges")

    def render(self, unit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Blend a line of the drawn colour along a random segment through a point inside the image."""
        h, w, c = unit.shape
        p = self.params
        length = min(float(rng.integers(*p.length, endpoint=True)), math.hypot(h, w))
        width = min(int(rng.integers(*p.width, endpoint=True)), max(1, min(h, w) // 4))
        row, col = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
        angle = rng.uniform(0.0, math.pi)
        colour = _draw(rng, p.intensity, c)
        dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
        start = (round((col - dx) * _ONE), round((row - dy) * _ONE))
        end = (round((col + dx) * _ONE), round((row + dy) * _ONE))
        canvas = np.zeros((h, w), np.uint8)
        cv2.line(canvas, start, end, 255, thickness=width,
                 lineType=cv2.LINE_AA if p.antialias else cv2.LINE_8, shift=_SHIFT)
        weight, footprint = footprint_of(canvas.astype(np.float32) / 255.0)
        return blend(unit, weight, colour), footprint


@AUGMENTATIONS.register("stain")
class Stain(Augmentation):
    """A soft-edged blotch: a filled disc blurred into a smooth alpha, blended with a colour at an opacity."""

    class Params(AugmentParams):
        radius: PixelRange = Field((3, 16), description="disc radius in pixels (low, high); clipped to fit")
        softness: UnitRange = Field((0.2, 0.5), description="edge blur sigma as a fraction of the radius")
        intensity: UnitRange = Field((0.1, 0.4), description="stain colour per channel, fraction of full "
                                                             "scale")
        opacity: UnitRange = Field((0.4, 0.8), description="blend weight at the stain's centre")

    def render(self, unit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Blend the stain colour with a blurred disc's alpha times the drawn opacity."""
        h, w, c = unit.shape
        p = self.params
        radius = fit_radius(int(rng.integers(*p.radius, endpoint=True)), h, w)
        row, col = inside_centre(rng, h, w, radius)
        sigma = float(_draw(rng, p.softness)) * radius
        opacity = float(_draw(rng, p.opacity))
        colour = _draw(rng, p.intensity, c)
        disc = np.zeros((h, w), np.float32)
        cv2.circle(disc, (col, row), radius, 1.0, thickness=-1)
        if sigma > 0:
            disc = cv2.GaussianBlur(disc, (0, 0), sigmaX=sigma)
        weight, footprint = footprint_of(disc * opacity)
        return blend(unit, weight, colour), footprint


@AUGMENTATIONS.register("dent")
class Dent(Augmentation):
    """A shaded ellipse: a smooth bowl lit from a random direction, bright on one wall and dark on the other.

    The bowl is a blurred filled ellipse; its shading is the directional derivative of that height map
    along the light direction, scaled so the strongest change equals the drawn depth.
    """

    class Params(AugmentParams):
        axes: PixelRange = Field((3, 12), description="ellipse semi-axes in pixels; clipped to fit")
        softness: UnitRange = Field((0.3, 0.6), description="bowl blur sigma as a fraction of the short axis")
        depth: UnitRange = Field((0.08, 0.25), description="largest brightness change as a fraction of scale")

    def render(self, unit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Add the shading of a blurred ellipse's slope towards a random light direction."""
        h, w, _ = unit.shape
        p = self.params
        a = fit_radius(int(rng.integers(*p.axes, endpoint=True)), h, w)
        b = fit_radius(int(rng.integers(*p.axes, endpoint=True)), h, w)
        row, col = inside_centre(rng, h, w, max(a, b))
        tilt = rng.uniform(0.0, 180.0)
        sigma = float(_draw(rng, p.softness)) * min(a, b)
        depth = float(_draw(rng, p.depth))
        light = rng.uniform(0.0, 2.0 * math.pi)
        bowl = np.zeros((h, w), np.float32)
        cv2.ellipse(bowl, (col, row), (a, b), tilt, 0.0, 360.0, 1.0, thickness=-1)
        if sigma > 0:
            bowl = cv2.GaussianBlur(bowl, (0, 0), sigmaX=sigma)
        _, footprint = footprint_of(bowl)
        grad_rows, grad_cols = np.gradient(bowl)
        shade = np.where(footprint, grad_cols * math.cos(light) + grad_rows * math.sin(light), 0.0)
        peak = float(np.abs(shade).max())
        delta = (depth / peak) * shade if peak > 0 else shade
        return unit + delta[..., None].astype(np.float32), footprint
