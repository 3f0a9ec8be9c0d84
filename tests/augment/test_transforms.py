"""Class-conditional augmentation, the synthetic defect data set and the normal textures."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.augment import build_augmentation
from plugins.augment.transforms import ClassConditionalAugment, defect_dataset, make_textures
from plugins.strategies import InvalidParamsError


def test_only_chosen_classes_are_augmented() -> None:
    augment = ClassConditionalAugment([build_augmentation("scratch"), build_augmentation("stain")],
                                      classes={2}, probability=1.0)
    rng = np.random.default_rng(0)
    images = make_textures(6, 16, rng)
    for label in (0, 1, 2, 3):
        for image in images:
            out = augment(image, label, rng)
            assert out.shape == image.shape and out.dtype == image.dtype
            assert np.array_equal(out, image) == (label != 2)


def test_probability_is_respected() -> None:
    augment = ClassConditionalAugment([build_augmentation("scratch")], classes=None, probability=0.3)
    rng = np.random.default_rng(1)
    image = np.full((8, 8), 200, np.uint8)
    draws = 600
    changed = sum(not np.array_equal(augment(image, int(rng.integers(5)), rng), image) for _ in range(draws))
    # binomial(600, 0.3): sd = 11.2; allow 4 sd
    assert abs(changed - 0.3 * draws) < 45
    never = ClassConditionalAugment([build_augmentation("scratch")], probability=0.0)
    assert all(never(image, 0, rng) is image for _ in range(50))


def test_reproducible_under_a_seed() -> None:
    augment = ClassConditionalAugment([build_augmentation(k) for k in ("scratch", "stain", "dent")],
                                      classes={1}, probability=0.5)
    images = make_textures(20, 24, np.random.default_rng(0))
    run = [augment(im, 1, np.random.default_rng(5)) for im in images]
    again = [augment(im, 1, np.random.default_rng(5)) for im in images]
    assert all(np.array_equal(a, b) for a, b in zip(run, again, strict=True))


@pytest.mark.parametrize("kwargs, message", [
    ({"augmentations": []}, "at least one"),
    ({"augmentations": ["scratch"]}, "Augmentation instances"),
    ({"augmentations": None, "probability": 1.5}, "probability"),
])
def test_invalid_settings(kwargs: dict, message: str) -> None:
    if kwargs["augmentations"] is None:
        kwargs["augmentations"] = [build_augmentation("dent")]
    with pytest.raises(InvalidParamsError, match=message):
        ClassConditionalAugment(**kwargs)


def test_defect_dataset_has_the_requested_ratio_and_real_defects() -> None:
    rng = np.random.default_rng(3)
    normals = make_textures(12, 32, rng)
    data = defect_dataset(normals, 400, rng, defect_ratio=0.06)
    assert data.classes == ("normal", "scratch", "stain", "dent")
    assert data.images.shape == (400, 32, 32) and data.images.dtype == np.uint8
    counts = np.bincount(data.labels, minlength=4)
    assert counts[0] == 376 and counts[1:].sum() == 24
    assert counts[1:].min() == counts[1:].max() == 8  # spread evenly over kinds
    for image, label, source, mask in zip(data.images, data.labels, data.sources, data.masks, strict=True):
        original = normals[source]
        if label == 0:
            assert np.array_equal(image, original) and not mask.any()
        else:
            assert mask.any() and not np.array_equal(image, original)
            assert np.array_equal(image[~mask], original[~mask])
    assert len(np.unique(data.sources)) == 12  # every normal is used


def test_defect_dataset_on_colour_with_built_augmentations() -> None:
    rng = np.random.default_rng(4)
    normals = np.repeat(make_textures(3, 16, rng)[..., None], 3, axis=3)
    patch = (np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 255, np.uint8))
    data = defect_dataset(normals, 10, rng, defect_ratio=0.5,
                          kinds=[build_augmentation("copy_paste", patches=[patch])])
    assert data.classes == ("normal", "copy_paste") and data.images.shape == (10, 16, 16, 3)
    assert (data.labels == 1).sum() == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must"),
    ({"defect_ratio": 1.2}, "defect_ratio"),
    ({"kinds": ()}, "kinds"),
])
def test_defect_dataset_rejects_bad_settings(kwargs: dict, message: str) -> None:
    settings = {"n": 10, "defect_ratio": 0.5} | kwargs
    with pytest.raises(InvalidParamsError, match=message):
        normals = make_textures(2, 8, np.random.default_rng(0))
        defect_dataset(normals, rng=np.random.default_rng(0), **settings)


def test_textures_are_plausible_brushed_surfaces() -> None:
    textures = make_textures(10, (24, 40), np.random.default_rng(0))
    assert textures.shape == (10, 24, 40) and textures.dtype == np.uint8
    np.testing.assert_array_equal(textures, make_textures(10, (24, 40), np.random.default_rng(0)))
    assert not np.array_equal(textures, make_textures(10, (24, 40), np.random.default_rng(1)))
    for t in textures.astype(np.float64):
        assert 100 < t.mean() < 220 and 5 < t.std() < 60  # mid-bright with visible texture, not saturated
        along_rows = np.abs(np.diff(t, axis=1)).mean()
        along_cols = np.abs(np.diff(t, axis=0)).mean()
        assert max(along_rows, along_cols) > 1.5 * min(along_rows, along_cols)  # brushed: anisotropic
    with pytest.raises(InvalidParamsError, match="size"):
        make_textures(1, 4, np.random.default_rng(0))
