"""Box copy-paste and detection synthesis rules: exact new boxes where pixels changed, the overlap limit,
the class filter, no donors or recipients without a crash, counts per rule and refused rules."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.augment import AUGMENTATIONS
from plugins.augment import build_augmentation
from plugins.augment.box_paste import (
    Exactness,
    changed_pixels,
    draw_boxed,
    overlap,
    paste_defects,
    pixel_box,
    pixel_rect,
)
from plugins.augment.defects import Scratch
from plugins.augment.synthesis import build_box_rules, synthesize, synthesize_boxes
from plugins.boxes import box_targets, iou_matrix
from plugins.detection_data import detection_defects
from plugins.specs import SynthesisRule
from plugins.strategies import InvalidParamsError

LABELS = ["scratch", "stain", "dent"]


@pytest.fixture(scope="module")
def data():
    ds = detection_defects(60, 0, size=64, seed=0)
    return ds.x_train, ds.y_train


def test_pixel_box_and_overlap() -> None:
    mask = np.zeros((10, 20), bool)
    mask[2:5, 4:9] = True
    np.testing.assert_allclose(pixel_box(mask), [4 / 20, 2 / 10, 9 / 20, 5 / 10])
    with pytest.raises(ValueError, match="empty"):
        pixel_box(np.zeros((4, 4), bool))
    big, small = np.array([0.0, 0.0, 1.0, 1.0]), np.array([[0.1, 0.1, 0.2, 0.2]])
    assert iou_matrix(big, small)[0, 0] < 0.1 and overlap(big, small)[0] == pytest.approx(1.0)
    assert len(overlap(big, np.zeros((0, 4)))) == 0


def test_pixel_rect_inverts_pixel_box_at_every_size() -> None:
    for size in (1, 7, 64, 96, 127, 128, 333, 1000):
        for start in range(0, size, max(1, size // 37)):
            for end in (start + 1, size):
                mask = np.zeros((3, size), bool)
                mask[1, start:end] = True
                box = pixel_box(mask)
                assert pixel_rect(box, 3, size)[2:] == (start, end)


def test_the_faint_halo_is_undone_outside_the_box() -> None:
    image = np.full((64, 64, 3), 170, np.uint8)
    stain = build_augmentation("stain", radius=(10, 10), softness=(0.5, 0.5))
    raw = stain.apply(image, np.random.default_rng(3))[0]
    whole = draw_boxed(image, stain, np.random.default_rng(3), rule=Exactness(halo=0.0))
    np.testing.assert_array_equal(whole.image, raw)  # halo 0: the drawer's own change, boxed whole
    np.testing.assert_array_equal(whole.box, pixel_box(changed_pixels(image, raw)))
    tight = draw_boxed(image, stain, np.random.default_rng(3))
    np.testing.assert_array_equal(tight.box, pixel_box(changed_pixels(image, tight.image)))
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert area(tight.box) < 0.9 * area(whole.box)
    faint = np.abs(raw.astype(int) - tight.image.astype(int)).max()
    assert 0 < faint <= 3  # only changes of two or three grey levels were undone


def test_pasted_boxes_are_where_the_pixels_changed(data) -> None:
    x, y = data
    pasted = paste_defects(x, y, 25, np.random.default_rng(0))
    assert pasted.made == 25 and pasted.requested == 25 and pasted.reason == ""
    images, targets = pasted  # unpacks as (images, targets)
    assert images.shape == (25, *x.shape[1:]) and images.dtype == x.dtype and targets.dtype == object
    for image, rows, r in zip(images, targets, pasted.recipients):
        assert len(y[r]) == 0  # pasted onto a defect-free image
        assert rows.shape == (1, 5) and int(rows[0, 0]) in (0, 1, 2)
        assert ((rows[:, 1:] >= 0) & (rows[:, 1:] <= 1)).all()
        np.testing.assert_array_equal(rows[0, 1:], pixel_box(changed_pixels(x[r], image)))


def test_paste_onto_any_image_keeps_away_from_existing_boxes(data) -> None:
    x, y = data
    pasted = paste_defects(x, y, 30, np.random.default_rng(1), onto="any", per_image=(1, 3))
    assert pasted.made == 30
    with_boxes = 0
    for image, rows, r in zip(pasted.images, pasted.targets, pasted.recipients):
        old = len(y[r])
        with_boxes += old > 0
        np.testing.assert_array_equal(rows[:old], y[r])  # the real boxes stay as they were
        assert len(rows) > old
        iou = iou_matrix(rows[:, 1:], rows[:, 1:])
        for j in range(old, len(rows)):
            others = list(range(j))
            assert (iou[j, others] <= 0.1 + 1e-6).all()
            assert (overlap(rows[j, 1:], rows[others, 1:]) <= 0.1 + 1e-6).all()
        changed = changed_pixels(x[r], image)
        inside = np.zeros_like(changed)
        for _, x0, y0, x1, y1 in rows[old:]:
            c0, r0, c1, r1 = np.rint(np.array([x0, y0, x1, y1]) * 64).astype(int)
            inside[r0:r1, c0:c1] = True
        assert not changed[~inside].any()
    assert with_boxes > 0


def test_classes_filter_copies_only_the_rare_class(data) -> None:
    x, y = data
    pasted = paste_defects(x, y, 15, np.random.default_rng(2), classes=[2])
    assert pasted.made == 15
    assert all(set(rows[:, 0].astype(int)) == {2} for rows in pasted.targets)


def test_no_donors_or_no_recipients_make_zero_items_and_say_why(data) -> None:
    x, y = data
    none_of_it = paste_defects(x, box_targets([np.zeros((0, 5))] * len(x)), 5, np.random.default_rng(0))
    assert none_of_it.made == 0 and none_of_it.requested == 5 and "no labelled box" in none_of_it.reason
    assert none_of_it.images.shape == (0, *x.shape[1:]) and len(none_of_it.targets) == 0
    absent = paste_defects(x, y, 5, np.random.default_rng(0), classes=[7])
    assert absent.made == 0 and "classes [7]" in absent.reason
    has_boxes = [i for i, t in enumerate(y) if len(t)]
    all_boxed = paste_defects(x[has_boxes], y[has_boxes], 5, np.random.default_rng(0))
    assert all_boxed.made == 0 and "defect-free" in all_boxed.reason
    assert paste_defects(x, y, 0, np.random.default_rng(0)).made == 0


def test_paste_is_deterministic_and_checks_its_inputs(data) -> None:
    x, y = data
    a = paste_defects(x, y, 6, np.random.default_rng(9), scale=(0.5, 2.0))
    b = paste_defects(x, y, 6, np.random.default_rng(9), scale=(0.5, 2.0))
    np.testing.assert_array_equal(a.images, b.images)
    assert all(np.array_equal(p, q) for p, q in zip(a.targets, b.targets))
    with pytest.raises(InvalidParamsError, match="box copy-paste"):
        paste_defects(x, y, 2, np.random.default_rng(0), scale=(2.0, 1.0))
    with pytest.raises(InvalidParamsError, match="box copy-paste"):
        paste_defects(x, y, 2, np.random.default_rng(0), rotation=(0, 90))
    with pytest.raises(ValueError, match="targets"):
        paste_defects(x, y[:3], 2, np.random.default_rng(0))


def test_grey_images_paste_too(data) -> None:
    x, y = data
    grey = x[..., 1]
    pasted = paste_defects(grey, y, 4, np.random.default_rng(3))
    assert pasted.made == 4 and pasted.images.shape == (4, 64, 64)
    for image, rows, r in zip(pasted.images, pasted.targets, pasted.recipients):
        np.testing.assert_array_equal(rows[-1, 1:], pixel_box(changed_pixels(grey[r], image)))


def test_synthesize_boxes_counts_per_rule(data) -> None:
    x, y = data
    free = sum(len(t) == 0 for t in y)
    dent_images = sum(bool((t[:, 0] == 2).any()) for t in y)
    rules = [SynthesisRule(augmentation="scratch", source=[""], per_item=2.0),
             SynthesisRule(augmentation="copy_paste", source=["dent"], per_item=1.0),
             SynthesisRule(augmentation="dent", source=["stain"], label="dent", per_item=1.0)]
    made = synthesize_boxes(x, y, rules, LABELS, np.random.default_rng(0))
    stain_images = sum(bool((t[:, 0] == 1).any()) for t in y)
    assert made.counts[0] == 2 * free and made.counts[1] == dent_images
    assert 0 < made.counts[2] <= stain_images  # crowded 64 px images may leave no free place: said so
    assert made.counts[2] == stain_images or made.notes == [
        f"augment rule 3 (dent): {made.counts[2]} of {stain_images} items; the rest found no visible draw "
        "away from their boxes"]
    assert len(made.images) == len(made.y) == sum(made.counts)
    assert made.y.dtype == object and made.images.dtype == x.dtype
    first = made.y[:made.counts[0]]
    assert all(t.shape == (1, 5) and t[0, 0] == 0 for t in first)  # a scratch on a defect-free image
    pasted = made.y[made.counts[0]:made.counts[0] + made.counts[1]]
    assert all(set(t[:, 0].astype(int)) == {2} for t in pasted)
    drawn = made.y[made.counts[0] + made.counts[1]:]
    assert all(t[-1, 0] == 2 and (iou_matrix(t[-1:, 1:], t[:-1, 1:]) <= 0.1 + 1e-6).all() for t in drawn)
    again = synthesize_boxes(x, y, rules, LABELS, np.random.default_rng(0))
    np.testing.assert_array_equal(made.images, again.images)


def test_synthesize_boxes_with_nothing_to_do(data) -> None:
    x, y = data
    made = synthesize_boxes(x, y, [], LABELS, np.random.default_rng(0))
    assert made.counts == [] and len(made.images) == 0 and made.y.dtype == object
    empty = box_targets([np.zeros((0, 5))] * len(x))
    rules = [SynthesisRule(augmentation="copy_paste")]
    made = synthesize_boxes(x, empty, rules, LABELS, np.random.default_rng(0))
    assert made.counts == [0] and len(made.images) == 0


def test_rules_that_cannot_make_boxes_are_refused_by_name(monkeypatch) -> None:
    class Blur(Scratch):
        """A stand-in for a whole-image, classification-only transform."""

    monkeypatch.setitem(AUGMENTATIONS._items, "blur", Blur)
    refused = "'blur' is a classification-only augmentation.*scratch, stain, dent, copy_paste"
    with pytest.raises(ValueError, match=refused):
        build_box_rules([SynthesisRule(augmentation="blur")], LABELS)
    with pytest.raises(InvalidParamsError, match="unknown augmentation 'mixup'"):
        build_box_rules([SynthesisRule(augmentation="mixup")], LABELS)
    with pytest.raises(InvalidParamsError, match="rule 2: copy_paste keeps each pasted defect's class"):
        build_box_rules([SynthesisRule(augmentation="dent"),
                         SynthesisRule(augmentation="copy_paste", source=["dent"], label="stain")], LABELS)
    with pytest.raises(InvalidParamsError, match="no patch directory"):
        build_box_rules([SynthesisRule(augmentation="copy_paste", params={"directory": "/p"})], LABELS)
    with pytest.raises(InvalidParamsError, match="name their class with label"):
        build_box_rules([SynthesisRule(augmentation="scratch")], ["crack", "pit"])
    with pytest.raises(InvalidParamsError, match="not among the project's labels"):
        build_box_rules([SynthesisRule(augmentation="scratch", source=["crack"])], LABELS)
    with pytest.raises(InvalidParamsError, match="rule 1"):
        build_box_rules([SynthesisRule(augmentation="stain", params={"radius": (0, 3)})], LABELS)
    assert len(build_box_rules([SynthesisRule(augmentation="copy_paste", source=["dent"], label="dent")],
                               LABELS)) == 1


def test_classification_synthesis_is_unchanged() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(80, 200, size=(10, 16, 16, 3), dtype=np.uint8)
    y = np.array([0, 1] * 5)
    made = synthesize(x, y, [SynthesisRule(augmentation="scratch", source=["ok"], label="scratch",
                                           per_item=1.5)], ["ok", "scratch"], np.random.default_rng(4))
    assert made.counts[0] == len(made.images) and 5 <= made.counts[0] <= 10
    assert (made.y == 1).all() and made.notes == []
