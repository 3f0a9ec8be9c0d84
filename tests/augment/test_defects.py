"""Scratch, stain and dent: the footprint contract, seeding, dtypes, tiny images and each defect's look."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.augment import AUGMENTATIONS, InvalidImageError, build_augmentation
from plugins.registry import UnknownPluginError
from plugins.strategies import InvalidParamsError

KINDS = ("scratch", "stain", "dent")
TOP = {np.uint8: 255, np.uint16: 65535, np.float32: 1.0, np.float64: 1.0}


def surface(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    """A bright noisy surface (values 0.55..0.9 of full scale) so every defect must visibly change it."""
    unit = np.random.default_rng(seed).uniform(0.55, 0.9, size=shape)
    return (np.rint(unit * TOP[dtype]) if TOP[dtype] > 1 else unit).astype(dtype)


def unit_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| per pixel as a fraction of full scale, the largest over channels."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / TOP[a.dtype.type]
    return d.max(axis=-1) if d.ndim == 3 else d


def test_registry_holds_the_defects() -> None:
    assert set(KINDS) <= set(AUGMENTATIONS.names())
    with pytest.raises(UnknownPluginError, match="available"):
        build_augmentation("crack")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 56), (40, 56, 1), (40, 56, 3)])
def test_changes_only_inside_the_footprint(kind: str, dtype: type, shape: tuple[int, ...]) -> None:
    image = surface(shape, dtype)
    before = image.copy()
    out, mask = build_augmentation(kind).apply(image, np.random.default_rng(7))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert mask.shape == shape[:2] and mask.dtype == np.bool_ and mask.any()
    np.testing.assert_array_equal(image, before)  # the input is not modified in place
    outside = ~mask
    np.testing.assert_array_equal(out[outside], image[outside])
    assert unit_diff(out, image)[mask].mean() > 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_output_and_other_seeds_differ(kind: str) -> None:
    image = surface((32, 32, 3), np.uint8)
    aug = build_augmentation(kind)
    first, mask = aug.apply(image, np.random.default_rng(11))
    again, mask_again = aug.apply(image, np.random.default_rng(11))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(mask, mask_again)
    others = [aug.apply(image, np.random.default_rng(s))[0] for s in (12, 13, 14)]
    assert all(not np.array_equal(first, o) for o in others)


@pytest.mark.parametrize("kind, params", [
    ("scratch", {"length": (500, 900), "width": (40, 60)}),
    ("stain", {"radius": (100, 300), "softness": (1.0, 1.0)}),
    ("dent", {"axes": (50, 400), "softness": (0.0, 1.0)}),
])
@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 3), (8, 200), (200, 8)])
def test_tiny_images_and_huge_settings_never_crash(kind: str, params: dict, shape: tuple[int, ...]) -> None:
    aug = build_augmentation(kind, **params)
    for seed in range(10):
        image = surface(shape, np.uint8, seed)
        out, mask = aug.apply(image, np.random.default_rng(seed))
        assert out.shape == image.shape and mask.any()
        np.testing.assert_array_equal(out[~mask], image[~mask])


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 48), w=st.integers(8, 48), channels=st.sampled_from([0, 1, 3]),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32]), kind=st.sampled_from(KINDS),
       seed=st.integers(0, 2**32 - 1))
def test_contract_holds_for_any_size(h: int, w: int, channels: int, dtype: type, kind: str,
                                     seed: int) -> None:
    shape = (h, w) if channels == 0 else (h, w, channels)
    image = surface(shape, dtype, seed % 1000)
    out, mask = build_augmentation(kind).apply(image, np.random.default_rng(seed))
    assert out.shape == image.shape and out.dtype == image.dtype and mask.shape == (h, w)
    assert mask.any()
    np.testing.assert_array_equal(out[~mask], image[~mask])


def test_scratch_is_dark_and_hard_edged_without_antialiasing() -> None:
    image = np.full((48, 48, 3), 0.8, np.float32)
    out, mask = build_augmentation("scratch", antialias=False, intensity=(0.1, 0.2)).apply(
        image, np.random.default_rng(3))
    inside = out[mask]
    assert (inside <= 0.2 + 1e-6).all() and (inside >= 0.1 - 1e-6).all()
    assert len(np.unique(inside, axis=0)) == 1  # one colour, no blended edge pixels


def test_antialiased_scratch_has_soft_edges() -> None:
    image = np.full((48, 48), 0.8, np.float32)
    out, mask = build_augmentation("scratch", antialias=True, width=(1, 1), intensity=(0.1, 0.1)).apply(
        image, np.random.default_rng(3))
    values = out[mask]
    assert (values < 0.8).all()
    assert ((values > 0.1 + 1e-3) & (values < 0.8 - 1e-3)).any()  # partially covered edge pixels


def test_stain_pulls_towards_its_colour_softly() -> None:
    image = np.full((64, 64), 0.9, np.float32)
    out, mask = build_augmentation("stain", radius=(10, 10), intensity=(0.2, 0.2), opacity=(0.6, 0.6)).apply(
        image, np.random.default_rng(0))
    inside = out[mask]
    assert (inside < 0.9).all()
    # darkest at the centre: 0.9 * (1 - 0.6) + 0.2 * 0.6 = 0.48, never darker than that
    assert inside.min() == pytest.approx(0.48, abs=0.02)
    assert len(np.unique(np.round(inside, 3))) > 10  # a soft edge, not a flat disc
    rows, cols = np.nonzero(mask)
    assert 20 <= rows.max() - rows.min() + 1 <= 40 and 20 <= cols.max() - cols.min() + 1 <= 40


def test_dent_brightens_one_wall_and_darkens_the_other() -> None:
    image = np.full((64, 64), 0.5, np.float32)
    dent = build_augmentation("dent", axes=(10, 10), depth=(0.2, 0.2))
    out, mask = dent.apply(image, np.random.default_rng(5))
    change = out[mask] - 0.5
    assert change.max() == pytest.approx(0.2, abs=1e-4) or change.min() == pytest.approx(-0.2, abs=1e-4)
    assert change.max() > 0.1 and change.min() < -0.1
    assert abs(change.sum()) < 0.05 * np.abs(change).sum()  # shading, not an overall brightness shift


@pytest.mark.parametrize("kind, params", [
    ("scratch", {"width": (3, 1)}),
    ("stain", {"opacity": (0.2, 1.5)}),
    ("dent", {"axes": (0, 4)}),
    ("dent", {"colour": 3}),
])
def test_invalid_params_are_rejected(kind: str, params: dict) -> None:
    with pytest.raises(InvalidParamsError, match=kind):
        build_augmentation(kind, **params)


@pytest.mark.parametrize("image, message", [
    (np.zeros((3, 28, 28), np.uint8), "channels"),
    (np.zeros((6, 40), np.uint8), "at least 8x8"),
    (np.zeros((16, 16), np.int32), "dtype"),
    (np.full((16, 16), 1.5, np.float32), r"\[0, 1\]"),
    (np.zeros((16,), np.uint8), "HxW"),
])
def test_invalid_images_are_rejected(image: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidImageError, match=message):
        build_augmentation("stain").apply(image, np.random.default_rng(0))
