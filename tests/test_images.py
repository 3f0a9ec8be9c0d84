"""Image decoding: every pixel layout to uint8, alpha on white, orientation, and typed refusals."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from plugins.images import ImageLoadError, decode_image, load_image, normalise, resize


def encode(im: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming width x height 8-bit gray, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)


def test_rgb_round_trip_and_gray_views(rgb):
    out = decode_image(encode(Image.fromarray(rgb)))
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out, rgb)
    gray = decode_image(encode(Image.fromarray(rgb)), mode="L")
    reference = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert gray.shape == (7, 9) and np.abs(gray.astype(int) - reference).max() <= 1


def test_grayscale_and_one_bit():
    gray = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(gray)), mode="L"), gray)
    as_rgb = decode_image(encode(Image.fromarray(gray)))
    assert as_rgb.shape == (6, 10, 3) and all((as_rgb[..., c] == gray).all() for c in range(3))
    bits = Image.fromarray(gray > 100).convert("1")
    np.testing.assert_array_equal(decode_image(encode(bits), mode="L"), np.where(gray > 100, 255, 0))


def test_palette_with_and_without_transparency():
    index = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = [10, 20, 30, 200, 0, 0, 0, 0, 250]
    im = Image.fromarray(index, mode="P")
    im.putpalette(palette + [0] * (768 - len(palette)))
    out = decode_image(encode(im))
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [200, 0, 0])
    np.testing.assert_array_equal(out[1, 0], [0, 0, 250])
    clear = decode_image(encode(im, transparency=1))
    np.testing.assert_array_equal(clear[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(clear[1, 0], [0, 0, 250])


def test_alpha_is_composited_on_white():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = [0, 0, 0, 0]          # fully transparent black -> white
    rgba[0, 1] = [0, 100, 200, 255]    # opaque -> unchanged
    rgba[0, 2] = [0, 0, 0, 128]        # half-transparent black -> 255 * (1 - 128/255)
    out = decode_image(encode(Image.fromarray(rgba, mode="RGBA")))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 1], [0, 100, 200])
    np.testing.assert_array_equal(out[0, 2], [127, 127, 127])
    la = Image.fromarray(np.array([[[40, 0], [40, 255]]], dtype=np.uint8), mode="LA")
    np.testing.assert_array_equal(decode_image(encode(la), mode="L"), [[255, 40]])


def test_sixteen_bit_is_divided_by_257_for_gray_and_colour():
    values = np.array([[0, 65535, 32896, 450]], dtype=np.uint16)  # 450/257 = 1.75: the high byte would say 1
    expected = np.array([[0, 255, 128, 2]], dtype=np.uint8)
    gray = Image.fromarray(values)
    assert gray.mode.startswith("I;16")
    np.testing.assert_array_equal(decode_image(encode(gray), mode="L"), expected)
    colour = np.stack([values, np.zeros_like(values), values[:, ::-1]], axis=2)  # R, G, B
    ok, buf = cv2.imencode(".png", colour[..., ::-1])  # OpenCV writes BGR
    assert ok
    out = decode_image(buf.tobytes())
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 1], np.zeros_like(expected))
    np.testing.assert_array_equal(out[..., 2], expected[:, ::-1])


def test_opencv_fallback_reads_colour_pfm_in_rgb_order():
    image = np.zeros((2, 2, 3), dtype=np.float32)
    image[0, 0] = [1.0, 0.0, 0.0]  # red, in RGB
    image[1, 1] = [0.0, 0.5, 1.0]
    ok, buf = cv2.imencode(".pfm", image[..., ::-1])
    assert ok
    with pytest.raises(Exception):
        Image.open(io.BytesIO(buf.tobytes()))  # a format Pillow does not read
    out = decode_image(buf.tobytes())
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[1, 1], [0, 128, 255])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    rgb = np.random.default_rng(orientation).integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(rgb), exif=exif.tobytes())
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data), reference)


def test_exif_rotated_jpeg_comes_out_upright():
    stored = np.zeros((40, 80, 3), dtype=np.uint8)
    stored[:, :40] = [255, 0, 0]  # left half red, right half blue as stored
    stored[:, 40:] = [0, 0, 255]
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    out = decode_image(encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (80, 40, 3)
    assert out[5, 20, 0] > 200 and out[5, 20, 2] < 50      # stored left (red) is now on top
    assert out[75, 20, 2] > 200 and out[75, 20, 0] < 50    # stored right (blue) is now at the bottom


def test_corrupt_inputs_are_refused_with_reasons(rgb, tmp_path):
    data = encode(Image.fromarray(rgb))
    cases = {
        "empty": b"",
        "corrupt": np.random.default_rng(1).bytes(500),
    }
    for reason, payload in cases.items():
        with pytest.raises(ImageLoadError) as info:
            decode_image(payload, source="x.png")
        assert info.value.reason == reason and "x.png" in str(info.value)
    big = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    full = encode(Image.fromarray(big))
    with pytest.raises(ImageLoadError) as info:
        decode_image(full[: len(full) // 2])
    assert info.value.reason == "corrupt"
    assert decode_image(data).shape == rgb.shape
    with pytest.raises(ValueError, match="mode"):
        decode_image(data, mode="CMYK")


def test_load_image_reports_missing_and_unreadable(tmp_path, rgb):
    path = tmp_path / "a.png"
    path.write_bytes(encode(Image.fromarray(rgb)))
    np.testing.assert_array_equal(load_image(path), rgb)
    for target, reason in [(tmp_path / "missing.png", "not_found"), (tmp_path, "unreadable")]:
        with pytest.raises(ImageLoadError) as info:
            load_image(target)
        assert info.value.reason == reason and str(target) in str(info.value)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(tmp_path / "empty.png")


def test_bomb_is_refused_from_the_header_before_decoding():
    header = png_header_only(4000, 4000)  # 16 M pixels claimed, no pixel data present
    with pytest.raises(ImageLoadError) as info:
        decode_image(header, max_pixels=1_000_000)
    assert info.value.reason == "too_large" and "4000x4000" in str(info.value)
    with pytest.raises(ImageLoadError) as info:  # under the limit it gets as far as decoding, and fails there
        decode_image(header, max_pixels=20_000_000)
    assert info.value.reason == "corrupt"
    with pytest.raises(ImageLoadError) as info:  # beyond Pillow's own bomb limit
        decode_image(png_header_only(100_000, 100_000), max_pixels=10**12)
    assert info.value.reason == "too_large"


def test_unsupported_layout():
    with pytest.raises(ImageLoadError) as info:
        normalise(np.zeros((4, 4, 5), dtype=np.uint8), 1, "RGB", "five.tif")
    assert info.value.reason == "unsupported"


def test_resize_keeps_channels_and_dtype(rgb):
    assert resize(rgb, (14, 18)).shape == (14, 18, 3)
    one = rgb[..., :1]
    assert resize(one, (3, 4)).shape == (3, 4, 1)
    flat = np.full((8, 8), 200, dtype=np.uint8)
    small = resize(flat, (2, 2))
    assert small.dtype == np.uint8 and (small == 200).all()
    with pytest.raises(ValueError):
        resize(rgb, (0, 3))
