"""Defect augmentations: synthetic scratches, stains and dents, and copy-paste of real defect patches.

Every augmentation takes an HxW or HxWxC image (C = 1 or 3; uint8, uint16, or float in [0, 1]) and a
numpy Generator, and returns an image of the same shape and dtype plus the boolean HxW footprint it was
allowed to change; pixels outside the footprint are returned bit for bit. Build one by name with
``build_augmentation('scratch', width=(1, 2))``.
"""

from __future__ import annotations

from plugins.augment.base import (  # noqa: F401  (the public names of the package)
    AUGMENTATIONS,
    AugmentParams,
    Augmentation,
    AugmentationError,
    CHANNELS,
    InvalidImageError,
    MIN_SIZE,
    PatchLoadError,
    WEIGHT_EPS,
    PixelRange,
    UnitRange,
    build_augmentation,
    check_image,
    from_unit,
    ordered_range,
    to_unit,
)
from plugins.augment import copy_paste, defects  # noqa: F401  (registers the built-in augmentations)

__all__ = [
    "AUGMENTATIONS", "CHANNELS", "MIN_SIZE", "WEIGHT_EPS", "AugmentParams", "Augmentation",
    "AugmentationError", "InvalidImageError", "PatchLoadError", "PixelRange", "UnitRange",
    "build_augmentation", "check_image", "from_unit", "ordered_range", "to_unit",
]
