"""Copy-paste: blending against a pixel loop, geometry, channel conversion, loading from disk, robustness."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from plugins.augment import PatchLoadError, build_augmentation
from plugins.augment.copy_paste import CopyPaste
from plugins.strategies import InvalidParamsError

IDENTITY = {"scale": (1.0, 1.0), "rotation": (0.0, 0.0)}


def framed_mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A uint8 mask with a 255 border (so the footprint's bounding box is the pasted rectangle) and an
    interior of 0, 255 and partial values."""
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.array([0, 255, 37, 128, 201], np.uint8), size=(h, w))
    mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1] = 255, 255, 255, 255
    return mask


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_blend_matches_a_pixel_loop() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(12, 14, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    mask = framed_mask(5, 6)
    out, footprint = CopyPaste([(patch, mask)], **IDENTITY).apply(image, np.random.default_rng(4))
    top, left, h, w = bbox(footprint)
    assert (h, w) == (5, 6)
    expected = image.astype(np.float64).copy()
    for y in range(5):
        for x in range(6):
            a = mask[y, x] / 255.0
            for c in range(3):
                expected[top + y, left + x, c] = patch[y, x, c] * a + image[top + y, left + x, c] * (1 - a)
    np.testing.assert_allclose(out, np.rint(expected), atol=1)
    region = out[top:top + 5, left:left + 6]
    np.testing.assert_array_equal(region[mask == 255], patch[mask == 255])
    np.testing.assert_array_equal(region[mask == 0], image[top:top + 5, left:left + 6][mask == 0])
    np.testing.assert_array_equal(footprint[top:top + 5, left:left + 6], mask > 0)
    outside = np.ones_like(footprint)
    outside[top:top + 5, left:left + 6] = False
    np.testing.assert_array_equal(out[outside], image[outside])


@pytest.mark.parametrize("dtype, top", [(np.uint16, 65535), (np.float32, 1.0)])
def test_other_dtypes_keep_shape_dtype_and_values(dtype: type, top: float) -> None:
    image = np.full((20, 20), 0.25 * top, dtype)
    patch = np.full((6, 6), 0.75 * top, dtype)
    out, footprint = CopyPaste([(patch, np.full((6, 6), 255, np.uint8))], **IDENTITY).apply(
        image, np.random.default_rng(0))
    assert out.dtype == dtype and out.shape == image.shape and footprint.sum() == 36
    np.testing.assert_array_equal(out[footprint], patch.ravel())  # a full-alpha paste is the patch exactly
    np.testing.assert_array_equal(out[~footprint], image[~footprint])


def test_rotation_by_90_degrees_swaps_the_patch_sides() -> None:
    patch = np.zeros((4, 10), np.uint8)
    out, footprint = CopyPaste([(patch, np.full((4, 10), 255, np.uint8))], scale=(1.0, 1.0),
                               rotation=(90.0, 90.0)).apply(np.full((24, 24), 200, np.uint8),
                                                            np.random.default_rng(1))
    _, _, h, w = bbox(footprint)
    assert (h, w) == (10, 4)
    assert (out[footprint] < 200).all()


def test_scale_doubles_the_footprint() -> None:
    pair = (np.zeros((5, 7), np.uint8), np.full((5, 7), 255, np.uint8))
    _, footprint = CopyPaste([pair], scale=(2.0, 2.0), rotation=(0.0, 0.0)).apply(
        np.full((40, 40), 200, np.uint8), np.random.default_rng(2))
    _, _, h, w = bbox(footprint)
    assert abs(h - 10) <= 1 and abs(w - 14) <= 1


@pytest.mark.parametrize("image_shape", [(8, 8), (8, 8, 3), (9, 300), (300, 9, 1)])
def test_huge_patches_are_shrunk_to_fit(image_shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    patch = rng.integers(0, 100, size=(300, 500, 3), dtype=np.uint8)
    mask = np.zeros((300, 500), np.uint8)
    cv2.line(mask, (10, 20), (490, 280), 255, 6)  # a thin scratch across the whole patch
    aug = CopyPaste([(patch, mask)], scale=(0.5, 3.0), count=(1, 3))
    for seed in range(10):
        image = np.full(image_shape, 230, np.uint8)
        out, footprint = aug.apply(image, np.random.default_rng(seed))
        assert out.shape == image.shape and footprint.any()
        assert (out[footprint] < 230).any()
        np.testing.assert_array_equal(out[~footprint], image[~footprint])


def test_grey_patch_on_colour_image_and_colour_patch_on_grey_image() -> None:
    grey = (np.full((4, 4), 90, np.uint8), np.full((4, 4), 255, np.uint8))
    out, footprint = CopyPaste([grey], **IDENTITY).apply(np.zeros((10, 10, 3), np.uint8),
                                                         np.random.default_rng(0))
    np.testing.assert_array_equal(out[footprint], np.full((16, 3), 90))
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    for order, expected in (("rgb", 0.299 * 200), ("bgr", 0.114 * 200)):
        out, footprint = CopyPaste([(red, grey[1])], channel_order=order, **IDENTITY).apply(
            np.zeros((10, 10), np.uint8), np.random.default_rng(0))
        np.testing.assert_allclose(out[footprint], expected, atol=0.5)


def test_seeding() -> None:
    rng = np.random.default_rng(0)
    aug = CopyPaste([(rng.integers(0, 256, (6, 6), dtype=np.uint8), framed_mask(6, 6))])
    image = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    first = aug.apply(image, np.random.default_rng(9))[0]
    np.testing.assert_array_equal(first, aug.apply(image, np.random.default_rng(9))[0])
    assert not np.array_equal(first, aug.apply(image, np.random.default_rng(10))[0])


def write_pair(directory: Path, name: str, bgr: tuple[int, int, int], mask_value: int = 255) -> None:
    cv2.imwrite(str(directory / f"{name}_patch.png"), np.full((5, 5, 3), bgr, np.uint8))
    cv2.imwrite(str(directory / f"{name}_mask.png"), np.full((5, 5), mask_value, np.uint8))


def test_loads_pairs_from_a_directory_as_rgb(tmp_path: Path) -> None:
    write_pair(tmp_path, "blue", (255, 0, 0))
    aug = build_augmentation("copy_paste", directory=str(tmp_path), **IDENTITY)
    assert len(aug.patches) == 1 and aug.config()["params"]["directory"] == str(tmp_path)
    out, footprint = aug.apply(np.zeros((12, 12, 3), np.uint8), np.random.default_rng(0))
    np.testing.assert_array_equal(out[footprint], np.tile([0, 0, 255], (25, 1)))
    as_bgr = build_augmentation("copy_paste", directory=str(tmp_path), channel_order="bgr", **IDENTITY)
    out, footprint = as_bgr.apply(np.zeros((12, 12, 3), np.uint8), np.random.default_rng(0))
    np.testing.assert_array_equal(out[footprint], np.tile([255, 0, 0], (25, 1)))


def test_patch_without_mask_names_the_file(tmp_path: Path) -> None:
    write_pair(tmp_path, "good", (10, 10, 10))
    cv2.imwrite(str(tmp_path / "lonely_patch.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(PatchLoadError, match="lonely_patch.png.*lonely_mask.png"):
        build_augmentation("copy_paste", directory=str(tmp_path))


def test_unreadable_patch_names_the_file_or_is_skipped(tmp_path: Path) -> None:
    write_pair(tmp_path, "good", (10, 10, 10))
    (tmp_path / "broken_patch.png").write_bytes(b"not a png")
    cv2.imwrite(str(tmp_path / "broken_mask.png"), np.zeros((5, 5), np.uint8))
    with pytest.raises(PatchLoadError, match="broken_patch.png"):
        build_augmentation("copy_paste", directory=str(tmp_path))
    with pytest.warns(UserWarning, match="broken_patch.png"):
        aug = build_augmentation("copy_paste", directory=str(tmp_path), skip_bad=True)
    assert [Path(p.source).name for p in aug.patches] == ["good_patch.png"]


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "no usable defect patches"),
    (lambda d: write_pair(d, "blank", (0, 0, 0), mask_value=0), "empty"),
])
def test_directories_without_usable_patches_are_rejected(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(PatchLoadError, match=message):
        build_augmentation("copy_paste", directory=str(tmp_path), skip_bad=False)


def test_bad_construction_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidParamsError, match="needs defect patches"):
        build_augmentation("copy_paste")
    with pytest.raises(PatchLoadError, match="not a directory"):
        build_augmentation("copy_paste", directory=str(tmp_path / "missing"))
    with pytest.raises(PatchLoadError, match="must match"):
        CopyPaste([(np.zeros((4, 5), np.uint8), np.full((5, 4), 255, np.uint8))])
    with pytest.raises(InvalidParamsError, match="scale"):
        CopyPaste([(np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8))], scale=(2.0, 1.0))
