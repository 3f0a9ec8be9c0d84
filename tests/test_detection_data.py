"""The synthetic detection data set: exact boxes (proved by diffing), determinism, disjoint background
families, the defect-free share, invisible defects never boxed, speed and the loader registry."""

from __future__ import annotations

import time

import numpy as np
import pytest

from plugins.augment import build_augmentation
from plugins.augment.box_paste import Exactness, changed_pixels, draw_boxed, pixel_box
from plugins.boxes import iou_matrix
from plugins.datasets import DatasetError
from plugins.detection_data import (
    DETECTION_DATASETS,
    FAMILIES,
    TEST_FAMILIES,
    TRAIN_FAMILIES,
    detection_defects,
    draw_defects,
    load_detection_dataset,
    make_background,
)
from plugins.registry import UnknownPluginError

KINDS = ("scratch", "stain", "dent")


@pytest.fixture(scope="module")
def data():
    """500 images of 128 px, timed: the size the brief promises in a few seconds."""
    start = time.perf_counter()
    ds = detection_defects(400, 100, size=128, seed=0)
    return ds, time.perf_counter() - start


def test_five_hundred_images_take_a_few_seconds(data) -> None:
    ds, seconds = data
    assert ds.x_train.shape == (400, 128, 128, 3) and ds.x_test.shape == (100, 128, 128, 3)
    assert ds.x_train.dtype == np.uint8
    assert seconds < 15.0, f"{seconds:.1f} s"


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", KINDS)
def test_each_drawn_box_is_the_tight_box_of_the_pixels_that_changed(family: str, kind: str) -> None:
    drawer = build_augmentation(kind)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        before = make_background(family, 96, rng)
        drawn = draw_boxed(before, drawer, rng)
        assert drawn is not None
        diff = changed_pixels(before, drawn.image)
        np.testing.assert_array_equal(drawn.changed, diff)
        np.testing.assert_array_equal(drawn.box, pixel_box(diff))
        x0, y0, x1, y1 = np.rint(drawn.box * 96).astype(int)
        outside = np.ones_like(diff)
        outside[y0:y1, x0:x1] = False
        assert not diff[outside].any()
        assert diff[y0].any() and diff[y1 - 1].any() and diff[:, x0].any() and diff[:, x1 - 1].any()


def test_several_defects_keep_separate_exact_boxes() -> None:
    drawers = [(i, build_augmentation(k)) for i, k in enumerate(KINDS)]
    for seed in range(20):
        rng = np.random.default_rng(seed)
        background = make_background("brushed_metal", 64, rng)
        item = draw_defects(background, drawers * 2, rng, Exactness(max_iou=0.5))
        diff = changed_pixels(item.background, item.image)
        inside = np.zeros_like(diff)
        for _, x0, y0, x1, y1 in item.targets:
            c0, r0, c1, r1 = np.rint(np.array([x0, y0, x1, y1]) * 64).astype(int)
            inside[r0:r1, c0:c1] = True
            assert diff[r0:r1, c0:c1].any()
        assert not diff[~inside].any()  # nothing changed outside the boxes
        assert len(item.targets) + item.undrawn == 6
        if len(item.targets) > 1:
            iou = iou_matrix(item.targets[:, 1:], item.targets[:, 1:])
            assert (iou[~np.eye(len(iou), dtype=bool)] <= 0.5 + 1e-6).all()
        if len(item.targets) == 1:
            np.testing.assert_array_equal(item.targets[0, 1:], pixel_box(diff))


def test_boxes_are_valid_and_overlapping_defects_are_kept_apart(data) -> None:
    ds, _ = data
    overlapping = 0
    for y in (*ds.y_train, *ds.y_test):
        assert y.dtype == np.float32 and y.shape[1] == 5
        assert set(np.unique(y[:, 0])) <= {0.0, 1.0, 2.0}
        assert ((y[:, 1:] >= 0) & (y[:, 1:] <= 1)).all()
        assert (y[:, 3] > y[:, 1]).all() and (y[:, 4] > y[:, 2]).all()
        if len(y) > 1:
            iou = iou_matrix(y[:, 1:], y[:, 1:])
            overlapping += int((iou[np.triu_indices(len(y), 1)] > 0).any())
    assert overlapping > 0
    assert ds.class_names == list(KINDS) and ds.n_classes == 3


def test_defect_free_share_is_as_requested(data) -> None:
    ds, _ = data
    assert ds.undrawn == 0
    for y, n in ((ds.y_train, 400), (ds.y_test, 100)):
        free = sum(len(t) == 0 for t in y)
        assert free == round(0.3 * n)
        assert max(len(t) for t in y) <= 3
    ds2 = detection_defects(50, 10, size=32, defect_free=0.0, seed=1)
    assert all(len(t) >= 1 for t in ds2.y_train)


def test_train_and_test_backgrounds_come_from_disjoint_families(data) -> None:
    ds, _ = data
    assert ds.background_families == {"train": TRAIN_FAMILIES, "test": TEST_FAMILIES}
    assert not set(TRAIN_FAMILIES) & set(TEST_FAMILIES)
    assert set(ds.background_train) == set(TRAIN_FAMILIES)
    assert set(ds.background_test) == set(TEST_FAMILIES)
    assert len(ds.background_train) == 400 and len(ds.background_test) == 100
    with pytest.raises(DatasetError, match="different background families"):
        detection_defects(4, 4, size=32, train_families=("wood_grain",), test_families=("wood_grain",))
    with pytest.raises(DatasetError, match="unknown background families"):
        detection_defects(4, 4, size=32, test_families=("marble",))


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = detection_defects(20, 6, size=48, seed=3)
    b = detection_defects(20, 6, size=48, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    for ya, yb in zip((*a.y_train, *a.y_test), (*b.y_train, *b.y_test)):
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a.x_train, detection_defects(20, 6, size=48, seed=4).x_train)
    more_test = detection_defects(20, 9, size=48, seed=3)  # the train split does not depend on n_test
    np.testing.assert_array_equal(more_test.x_train, a.x_train)


def test_invisible_defects_are_not_boxed_and_not_left_in_the_image() -> None:
    rng = np.random.default_rng(0)
    before = make_background("gradient_noise", 48, rng)
    faint = build_augmentation("stain", opacity=(0.03, 0.05), intensity=(0.3, 0.4))  # a few levels only
    assert changed_pixels(before, faint.apply(before, np.random.default_rng(5))[0]).sum() >= 4
    assert draw_boxed(before, faint, rng) is None
    ds = detection_defects(12, 4, size=32, classes=("stain",), defect_free=0.0, seed=2,
                           defect_params={"stain": {"opacity": (0.03, 0.05), "intensity": (0.3, 0.4)}})
    assert all(len(t) == 0 for t in (*ds.y_train, *ds.y_test))
    assert ds.undrawn >= 16
    clean = np.stack([make_background(f, 32, np.random.default_rng([2, 0, i]))
                      for i, f in enumerate(ds.background_train)])
    np.testing.assert_array_equal(ds.x_train, clean)  # failed draws leave no trace


def test_tiny_changes_below_the_pixel_limit_do_not_count() -> None:
    rng = np.random.default_rng(1)
    before = make_background("brushed_metal", 64, rng)
    dot = build_augmentation("stain", radius=(1, 1), softness=(0.0, 0.0), opacity=(0.8, 0.8))
    assert draw_boxed(before, dot, rng, rule=Exactness(min_pixels=50)) is None
    assert draw_boxed(before, dot, np.random.default_rng(1), rule=Exactness(min_pixels=2)) is not None


def test_loader_registry_and_parameter_errors() -> None:
    assert "detection_defects" in DETECTION_DATASETS
    ds = load_detection_dataset("detection_defects", n_train=3, n_test=2, size=32)
    assert len(ds.y_train) == 3 and len(ds.y_test) == 2
    with pytest.raises(UnknownPluginError, match="available"):
        load_detection_dataset("coco")
    with pytest.raises(DatasetError, match="not defect drawers"):
        detection_defects(3, 3, size=32, classes=("scratch", "copy_paste"))
    with pytest.raises(DatasetError, match="defect_params"):
        detection_defects(3, 3, size=32, defect_params={"crack": {}})
    with pytest.raises(DatasetError, match="class 'scratch'"):
        detection_defects(3, 3, size=32, defect_params={"scratch": {"length": (9, 2)}})
    with pytest.raises(DatasetError, match="extra"):
        detection_defects(3, 3, size=32, colour="red")


def test_class_weights_make_a_rare_class() -> None:
    ds = detection_defects(200, 0, size=32, seed=5, class_weights=(1.0, 1.0, 0.05))
    labels = np.concatenate([t[:, 0] for t in ds.y_train]).astype(int)
    counts = np.bincount(labels, minlength=3)
    assert counts[2] < 0.1 * counts[0]
