"""Image decoding for training and serving: bytes in, a uint8 array out, or an ImageLoadError with a reason.

Pillow decodes every format it recognises. OpenCV decodes what Pillow does not recognise (Radiance HDR,
colour PFM, ...) and 16-bit colour, which Pillow would cut to its high byte. Every decoded array then goes
through the same pure steps: bit depth to uint8, alpha composited on white, EXIF orientation, target mode.

Bit depth: integer images wider than 8 bits are read as 16-bit (clipped to 0..65535) and divided by 257,
so 65535 -> 255 and 0 -> 0 for every image alike; the image's own range is never stretched, so a dark
16-bit image stays dark. Float images are read as 0..1 intensities (clipped) and multiplied by 255.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

Mode = Literal["RGB", "L"]

DEFAULT_MAX_PIXELS = 64_000_000
_ORIENTATION_TAG = 0x0112
# Pillow modes whose pixels np.asarray returns unchanged; anything else is converted first.
_NATIVE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"PA", "La", "RGBa"})


class ImageLoadError(ValueError):
    """An image that cannot be used; `reason` is a short code a caller can log or count.

    Reasons: "empty", "not_found", "unreadable" (the file exists but cannot be read), "corrupt" (not an
    image, or a truncated or damaged one), "too_large" (more pixels than allowed), "unsupported" (decoded,
    but its pixel layout has no RGB or grayscale reading).
    """

    def __init__(self, reason: str, source: str, detail: str) -> None:
        self.reason, self.source, self.detail = reason, source, detail
        super().__init__(f"{source}: {detail} ({reason})")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """The array in 0..255 uint8: 16-bit and wider integers divided by 257, floats (0..1) times 255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        wide = np.clip(array.astype(np.float64), 0, 65535)
        return np.rint(wide / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        return np.rint(np.clip(np.nan_to_num(array.astype(np.float64)), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"pixel type {array.dtype} has no 8-bit reading; integers and floats are allowed")


def composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 colour (HxW or HxWx3) over a white background with uint8 alpha (HxW)."""
    a = alpha.astype(np.float64) / 255.0
    if color.ndim == 3:
        a = a[..., None]
    return np.rint(color.astype(np.float64) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """The image as displayed under EXIF orientation 1..8 (other values leave it unchanged)."""
    if orientation == 2:
        out = image[:, ::-1]
    elif orientation == 3:
        out = image[::-1, ::-1]
    elif orientation == 4:
        out = image[::-1]
    elif orientation == 5:
        out = image.swapaxes(0, 1)
    elif orientation == 6:
        out = np.rot90(image, k=-1)
    elif orientation == 7:
        out = image.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        out = np.rot90(image, k=1)
    else:
        out = image
    return np.ascontiguousarray(out)


def to_mode(image: np.ndarray, mode: Mode) -> np.ndarray:
    """A uint8 HxW or HxWx3 image as HxWx3 ("RGB") or HxW ("L", ITU-R 601 luma)."""
    if mode == "RGB":
        return image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def normalise(raw: np.ndarray, orientation: int, mode: Mode, source: str) -> np.ndarray:
    """A decoded array (HxW or HxWxC, C in 1..4, RGB(A) order, any depth) as a uint8 image in `mode`."""
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    if raw.ndim not in (2, 3) or (raw.ndim == 3 and raw.shape[2] not in (2, 3, 4)) or 0 in raw.shape:
        raise ImageLoadError("unsupported", source, f"pixel layout {raw.shape} is not grayscale, RGB or "
                                                    "either with alpha")
    try:
        image = to_uint8(raw)
    except ValueError as exc:
        raise ImageLoadError("unsupported", source, str(exc)) from None
    if image.ndim == 3 and image.shape[2] in (2, 4):
        color, alpha = image[..., :-1], image[..., -1]
        image = composite_on_white(color[..., 0] if color.shape[2] == 1 else color, alpha)
    return to_mode(apply_orientation(image, orientation), mode)


def _rawmode(im: Image.Image) -> str:
    """The raw pixel layout of the file's first tile ('RGB;16B', ...), '' when Pillow does not say."""
    if not im.tile:
        return ""
    args = im.tile[0][3]  # (codec, extents, offset, args); args is the rawmode or starts with it
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _pillow_array(im: Image.Image) -> np.ndarray:
    """The loaded Pillow image as an array in a mode `normalise` understands."""
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    if "transparency" in im.info or im.mode in _ALPHA_MODES:
        return np.asarray(im.convert("RGBA"))
    if im.mode in _NATIVE_MODES:
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))


def _opencv_array(data: bytes) -> np.ndarray | None:
    """The image OpenCV decodes from `data` in RGB(A) order at its own depth, None if it cannot."""
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        return None
    if decoded.ndim == 3 and decoded.shape[2] == 3:
        return decoded[..., ::-1]
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        return decoded[..., [2, 1, 0, 3]]
    return decoded


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation 1..8; 1 (as stored) when there is none or the EXIF block is malformed."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):  # a damaged EXIF block must
        return 1  # not cost an otherwise readable image


def _check_size(width: int, height: int, max_pixels: int, source: str) -> None:
    if width * height > max_pixels:
        raise ImageLoadError("too_large", source, f"{width}x{height} = {width * height} pixels exceeds "
                                                  f"the limit of {max_pixels}")


# Images above this many pixels are shrunk while decoding when a target size is given (below it the exact
# full-size path runs, so small images decode exactly as before).
REDUCE_ABOVE_PIXELS = 1_000_000
_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


def header_pixels(data: bytes) -> int | None:
    """Width x height from the image header (nothing decoded), None when Pillow cannot read the header."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.width) * int(im.height)
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombError):  # decode_image
        return None  # reports why


def _shrink_on_decode(im: Image.Image, target: tuple[int, int] | None) -> Image.Image:
    """A large image reduced while decoding to no less than twice `target` (height, width): JPEG by DCT
    scaling (draft), others by an integer box reduce; the caller's resize does the rest."""
    if target is None or im.width * im.height <= REDUCE_ABOVE_PIXELS:
        return im
    height, width = 2 * target[0], 2 * target[1]
    if im.format == "JPEG":
        im.draft(im.mode, (width, height))  # decodes at 1/2, 1/4 or 1/8 scale, never below the size asked
    factor = min(im.width // width, im.height // height)
    if factor < 2 or im.mode not in _REDUCIBLE:
        return im
    im.load()
    return im.reduce(factor)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, mode: Mode = "RGB",
                 source: str = "<bytes>", target: tuple[int, int] | None = None) -> np.ndarray:
    """Decode image bytes to uint8 HxWx3 ("RGB") or HxW ("L"); raise ImageLoadError when unusable.

    The size in the header is checked against `max_pixels` before any pixel is decoded (Pillow's own
    decompression-bomb limit, Image.MAX_IMAGE_PIXELS, also applies). For formats only OpenCV reads the
    check runs after decoding, under OpenCV's own limit of 2**30 pixels. With `target` (height, width), an
    image of more than REDUCE_ABOVE_PIXELS is shrunk while decoding to about twice that size, so a huge
    image never exists in memory at full size as a float or RGB array.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if not data:
        raise ImageLoadError("empty", source, "no bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError("too_large", source, str(exc)) from None
    except UnidentifiedImageError:
        raw = _opencv_array(data)
        if raw is None:
            raise ImageLoadError("corrupt", source, "not an image format Pillow or OpenCV can read") from None
        _check_size(raw.shape[1], raw.shape[0], max_pixels, source)
        return normalise(raw, 1, mode, source)
    except Exception as exc:  # Pillow's format plugins raise many exception types on malformed headers
        raise ImageLoadError("corrupt", source, f"unreadable header: {exc}") from None
    with im:
        _check_size(im.width, im.height, max_pixels, source)
        if im.mode in ("RGB", "RGBA") and ";16" in _rawmode(im):
            raw = _opencv_array(data)
            if raw is None:
                raise ImageLoadError("corrupt", source, f"damaged 16-bit {im.format} data")
        else:
            orientation = _orientation(im)
            try:
                small = _shrink_on_decode(im, target)
                small.load()
                raw = _pillow_array(small)
            except Exception as exc:  # truncated streams raise OSError, broken chunks SyntaxError, ...
                raise ImageLoadError("corrupt", source, f"damaged {im.format} data: {exc}") from None
            return normalise(raw, orientation, mode, source)
        orientation = _orientation(im)
    return normalise(raw, orientation, mode, source)


def load_image(path: str | Path, **kwargs) -> np.ndarray:
    """Read and decode the image file at `path` (keyword arguments as for decode_image)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError("not_found", str(path), "no such file") from None
    except OSError as exc:
        raise ImageLoadError("unreadable", str(path), exc.strerror or str(exc)) from None
    return decode_image(data, source=str(path), **kwargs)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image resized to (height, width), keeping its dtype and channels (area filter when shrinking)."""
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return out[..., None] if image.ndim == 3 and out.ndim == 2 else out
