"""Defect synthesis, copy-paste and class-conditional augmentation: changes stay inside their footprint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from plugins.augment import AUGMENTATIONS, InvalidImageError, PatchLoadError, build_augmentation
from plugins.augment.copy_paste import paste
from plugins.augment.transforms import ClassConditionalAugment, defect_dataset, make_textures
from plugins.strategies import InvalidParamsError

SYNTHETIC = ("scratch", "stain", "dent")


def _image(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    unit = 0.4 + 0.2 * rng.random(shape)
    if dtype is np.uint8:
        return np.rint(unit * 255).astype(np.uint8)
    if dtype is np.uint16:
        return np.rint(unit * 65535).astype(np.uint16)
    return unit.astype(dtype)


def _patch_pair(size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    patch = np.zeros((size, size, 3), np.uint8)
    patch[..., 0] = 250  # a red defect
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), size // 3, 255, -1)
    return patch, mask


def _augmentation(name: str):
    return build_augmentation(name, patches=[_patch_pair()]) if name == "copy_paste" else build_augmentation(name)


@pytest.mark.parametrize("name", [*SYNTHETIC, "copy_paste"])
@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1), (48, 64, 3)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_changes_stay_inside_the_footprint(name, shape, dtype) -> None:
    image = _image(shape, dtype)
    for seed in range(3):
        out, footprint = _augmentation(name).apply(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == image.dtype
        assert footprint.shape == shape[:2] and footprint.dtype == np.bool_ and footprint.any()
        outside = ~footprint if image.ndim == 2 else ~footprint[..., None].repeat(image.shape[2], axis=2)
        np.testing.assert_array_equal(out[outside], image[outside])  # bit for bit outside
        scale = 255.0 if dtype is np.uint8 else 65535.0 if dtype is np.uint16 else 1.0
        changed = np.abs(out.astype(np.float64) - image.astype(np.float64)).max() / scale
        assert changed > 0.02, f"{name} barely changed the image ({changed:.4f} of full scale)"


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_seeded_and_different_across_seeds(name) -> None:
    image = _image((40, 40, 3), np.uint8)
    aug = _augmentation(name)
    a, _ = aug.apply(image, np.random.default_rng(7))
    b, _ = aug.apply(image, np.random.default_rng(7))
    c, _ = aug.apply(image, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", [*SYNTHETIC, "copy_paste"])
def test_tiny_images_never_crash(name) -> None:
    image = _image((8, 8), np.uint8)
    for seed in range(20):
        out, footprint = _augmentation(name).apply(image, np.random.default_rng(seed))
        assert out.shape == (8, 8)


def test_a_patch_larger_than_the_image_is_scaled_down_to_fit() -> None:
    big = _patch_pair(size=60)
    aug = build_augmentation("copy_paste", patches=[big], scale=(1.5, 2.0))
    out, footprint = aug.apply(_image((16, 20, 3), np.uint8), np.random.default_rng(0))
    assert out.shape == (16, 20, 3) and footprint.any()


def test_paste_is_alpha_blending() -> None:
    rng = np.random.default_rng(0)
    unit = rng.random((6, 7, 3)).astype(np.float32)
    pixels = rng.random((3, 4, 3)).astype(np.float32)
    alpha = np.array([[0, 1, 0.5, 0.25]] * 3, np.float32)
    out = paste(unit, pixels * alpha[..., None], alpha, 2, 1)
    expected = unit.copy()
    for r in range(3):
        for c in range(4):
            for ch in range(3):
                a = alpha[r, c]
                expected[2 + r, 1 + c, ch] = pixels[r, c, ch] * a + unit[2 + r, 1 + c, ch] * (1 - a)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # alpha 1 copies the patch, alpha 0 keeps the image
    np.testing.assert_allclose(out[2:5, 2], pixels[:, 1], atol=1e-6)
    np.testing.assert_array_equal(out[2:5, 1], unit[2:5, 1])


def test_patches_from_a_directory_and_clear_errors(tmp_path) -> None:
    patch, mask = _patch_pair()
    cv2.imwrite(str(tmp_path / "a_patch.png"), patch[..., ::-1])
    cv2.imwrite(str(tmp_path / "a_mask.png"), mask)
    aug = build_augmentation("copy_paste", directory=str(tmp_path))
    out, footprint = aug.apply(_image((32, 32, 3), np.uint8), np.random.default_rng(0))
    pasted = out[footprint]
    assert (pasted[:, 0].astype(int) - pasted[:, 1].astype(int)).max() > 100  # the red patch, in RGB order
    cv2.imwrite(str(tmp_path / "b_patch.png"), patch)  # no b_mask.png
    with pytest.raises(PatchLoadError, match="b_patch.png: no mask"):
        build_augmentation("copy_paste", directory=str(tmp_path))
    with pytest.warns(UserWarning, match="skipping"):
        assert len(build_augmentation("copy_paste", directory=str(tmp_path), skip_bad=True).patches) == 1
    with pytest.raises(InvalidParamsError, match="needs defect patches"):
        build_augmentation("copy_paste")


def test_bad_images_and_parameters_are_rejected() -> None:
    with pytest.raises(InvalidImageError, match="at least 8x8"):
        build_augmentation("scratch").apply(np.zeros((4, 4), np.uint8), np.random.default_rng(0))
    with pytest.raises(InvalidImageError, match="channels"):
        build_augmentation("stain").apply(np.zeros((3, 16, 16), np.uint8), np.random.default_rng(0))
    with pytest.raises(InvalidImageError, match="\\[0, 1\\]"):
        build_augmentation("dent").apply(np.full((16, 16), 2.0, np.float32), np.random.default_rng(0))
    with pytest.raises(InvalidParamsError, match="low <= high"):
        build_augmentation("scratch", width=(5, 2))


def test_class_conditional_augment_touches_only_chosen_classes_at_the_given_rate() -> None:
    image = _image((24, 24), np.uint8)
    augment = ClassConditionalAugment([build_augmentation("stain")], classes={2}, probability=0.3)
    rng = np.random.default_rng(0)
    assert all(augment(image, 1, rng) is image for _ in range(50))
    changed = sum(not np.array_equal(augment(image, 2, rng), image) for _ in range(2000))
    assert abs(changed / 2000 - 0.3) < 0.04  # 4 standard deviations of a binomial(2000, 0.3) share


def test_defect_dataset_has_the_rare_defect_ratio() -> None:
    rng = np.random.default_rng(0)
    normals = make_textures(20, 32, rng)
    assert normals.shape == (20, 32, 32) and normals.dtype == np.uint8 and normals.std() > 5
    data = defect_dataset(normals, 400, rng, defect_ratio=0.05)
    assert data.classes == ("normal", "scratch", "stain", "dent")
    assert (data.labels > 0).sum() == 20
    assert np.bincount(data.labels, minlength=4)[1:].tolist() == [7, 7, 6]
    for i in np.flatnonzero(data.labels):
        assert data.masks[i].any()
        assert not np.array_equal(data.images[i], normals[data.sources[i]])
    for i in np.flatnonzero(data.labels == 0)[:10]:
        np.testing.assert_array_equal(data.images[i], normals[data.sources[i]])
