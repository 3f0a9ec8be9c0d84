"""The augmentation contract: the Augmentation base class, its parameters, image checks, the registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from plugins.registry import Registry
from plugins.strategies import InvalidParamsError

MIN_SIZE = 8
CHANNELS = (1, 3)
# Effect weights below this are treated as zero: the footprint is where an effect has at least this weight.
WEIGHT_EPS = 1e-3
_INTEGER_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class AugmentationError(ValueError):
    """Base class: an image or patch the caller can fix."""


class InvalidImageError(AugmentationError):
    """An image with the wrong shape, dtype or value range; the message says what is allowed."""


class PatchLoadError(AugmentationError):
    """A defect patch or mask that is missing, unreadable or inconsistent; the message names the file."""


N = TypeVar("N", int, float)


def ordered_range(value: tuple[N, N]) -> tuple[N, N]:
    """Validate a (low, high) range: low <= high."""
    if value[0] > value[1]:
        raise ValueError(f"a range is (low, high) with low <= high, got {value}")
    return value


PixelRange = Annotated[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]],
                       AfterValidator(ordered_range)]
UnitRange = Annotated[tuple[Annotated[float, Field(ge=0.0, le=1.0)], Annotated[float, Field(ge=0.0, le=1.0)]],
                      AfterValidator(ordered_range)]


def check_image(image: np.ndarray, what: str = "image", min_size: int = MIN_SIZE) -> None:
    """Raise InvalidImageError unless `image` is an HxW or HxWxC (C in 1, 3) array this package can change."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3):
        raise InvalidImageError(f"{what} must be HxW or HxWxC (channels last), got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in CHANNELS:
        raise InvalidImageError(f"{what} must have 1 or 3 channels, last axis; got shape {image.shape} "
                                "(a channels-first CxHxW array must be transposed to HxWxC)")
    if min(image.shape[:2]) < min_size:
        raise InvalidImageError(f"{what} must be at least {min_size}x{min_size}, got {image.shape[:2]}")
    if image.dtype not in _INTEGER_MAX and image.dtype not in _FLOATS:
        raise InvalidImageError(f"{what} dtype must be uint8, uint16, float32 or float64, got {image.dtype}")
    if image.dtype in _FLOATS and not (np.isfinite(image).all() and 0.0 <= image.min() <= image.max() <= 1.0):
        raise InvalidImageError(f"float {what} values must be finite and in [0, 1]")


def to_unit(image: np.ndarray) -> np.ndarray:
    """The image as an HxWxC float32 array in [0, 1]."""
    unit = image.astype(np.float32) / np.float32(_INTEGER_MAX.get(image.dtype, 1.0))
    return unit if unit.ndim == 3 else unit[..., None]


def from_unit(unit: np.ndarray, like: np.ndarray) -> np.ndarray:
    """An HxWxC [0, 1] float array converted to the shape and dtype of `like` (rounded for integer dtypes)."""
    unit = np.clip(unit, 0.0, 1.0).reshape(like.shape)
    top = _INTEGER_MAX.get(like.dtype)
    if top is None:
        return unit.astype(like.dtype)
    return np.rint(unit * top).astype(like.dtype)


class AugmentParams(BaseModel):
    """Hyperparameters every augmentation accepts (none yet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Augmentation(ABC):
    """A seedable image change confined to a footprint; subclasses implement `render` on [0, 1] floats."""

    name: ClassVar[str] = "augmentation"
    Params: ClassVar[type[AugmentParams]] = AugmentParams

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            raise InvalidParamsError(f"invalid parameters for augmentation {self.name}: {exc}") from None

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The augmented image (same shape and dtype) and the boolean HxW footprint it may differ on."""
        check_image(image)
        rendered, footprint = self.render(to_unit(image), rng)
        where = footprint if image.ndim == 2 else footprint[..., None]
        return np.where(where, from_unit(rendered, image), image), footprint

    @abstractmethod
    def render(self, unit: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The augmented HxWxC float image in [0, 1] and the boolean HxW footprint of the change."""

    def config(self) -> dict[str, Any]:
        """JSON-serialisable {'name', 'params'} that rebuilds this augmentation."""
        return {"name": self.name, "params": self.params.model_dump(mode="json")}


AUGMENTATIONS: Registry[type[Augmentation]] = Registry("augmentation")


def build_augmentation(name: str, **params: Any) -> Augmentation:
    """Construct the augmentation registered as `name`."""
    return AUGMENTATIONS.get(name)(**params)
