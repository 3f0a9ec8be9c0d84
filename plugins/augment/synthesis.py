"""Synthetic training items from per-project rules (plugins.specs.SynthesisRule): pure, seeded, no I/O.

`synthesize` serves classification (one label or a label vector per item); `synthesize_boxes` serves object
detection, where every synthetic item gets exact boxes (plugins.augment.box_paste): the defect drawers draw
new defects, `copy_paste` copies the project's own labelled defects onto defect-free images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from plugins.augment.base import AUGMENTATIONS, Augmentation, build_augmentation, check_image
from plugins.augment.box_paste import (
    DRAWERS,
    PasteParams,
    check_detection_set,
    draw_boxed,
    paste_defects,
    paste_params,
)
from plugins.boxes import box_targets
from plugins.specs import SynthesisRule
from plugins.strategies import InvalidParamsError


@dataclass
class Synthesized:
    """Synthetic items (images and targets, in the layout of the real ones) and how many each rule made."""

    images: np.ndarray
    y: np.ndarray
    counts: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why a rule made fewer items than it asked for


def _check_labels(number: int, rule: SynthesisRule, labels: Sequence[str]) -> None:
    unknown = sorted({s for s in rule.source or [] if s and s not in labels} |
                     ({rule.label} - set(labels) if rule.label is not None else set()))
    if unknown:
        raise InvalidParamsError(f"augment rule {number}: labels {unknown} are not among the project's "
                                 f"labels {list(labels)}")


def build_rules(rules: Sequence[SynthesisRule], labels: Sequence[str]) -> list[Augmentation]:
    """The augmentation of each rule; InvalidParamsError naming the rule whose labels or params are wrong."""
    built = []
    for number, rule in enumerate(rules, 1):
        _check_labels(number, rule, labels)
        try:
            built.append(build_augmentation(rule.augmentation, **rule.params))
        except (KeyError, ValueError) as exc:
            raise InvalidParamsError(f"augment rule {number}: {exc}") from None
    return built


def _matches(y: np.ndarray, source: list[str] | None, labels: Sequence[str], multilabel: bool) -> np.ndarray:
    """(N,) bool: the items a rule's `source` selects."""
    if source is None:
        return np.ones(len(y), dtype=bool)
    wanted = [labels.index(s) for s in source if s]
    if multilabel:
        hit = y[:, wanted].any(axis=1) if wanted else np.zeros(len(y), dtype=bool)
        return hit | (~y.any(axis=1) if "" in source else False)
    return np.isin(y, wanted)


def _picks(chosen: np.ndarray, per_item: float, rng: np.random.Generator) -> np.ndarray:
    """int(per_item) copies of each chosen index, plus each once more with probability the fractional part."""
    whole, share = int(per_item), per_item - int(per_item)
    extra = chosen[rng.random(len(chosen)) < share]
    return np.concatenate([np.repeat(chosen, whole), extra]).astype(np.int64)


def _relabel(row: np.ndarray, label: str | None, labels: Sequence[str], multilabel: bool) -> np.ndarray:
    if label is None:
        return row
    out = np.array(row, copy=True)
    if multilabel:
        out[labels.index(label)] = 1
        return out
    return np.asarray(labels.index(label), dtype=row.dtype)


def synthesize(images: np.ndarray, y: np.ndarray, rules: Sequence[SynthesisRule], labels: Sequence[str],
               rng: np.random.Generator, multilabel: bool = False) -> Synthesized:
    """Synthetic items for real (images, y): per rule, round(per_item) copies of each matching item (the
    fractional part as a random share), augmented and relabelled as the rule says."""
    augmentations = build_rules(rules, labels)
    y = np.asarray(y)
    out_x, out_y, counts = [], [], []
    for rule, augmentation in zip(rules, augmentations):
        picks = _picks(np.flatnonzero(_matches(y, rule.source, labels, multilabel)), rule.per_item, rng)
        for i in picks:
            image = images[i]
            gray = image.ndim == 3 and image.shape[2] == 1
            source = image[..., 0] if gray else image
            check_image(source, what="a training image to augment")
            changed = augmentation.apply(source, rng)[0]
            out_x.append(changed[..., None] if gray else changed)
            out_y.append(_relabel(y[i], rule.label, labels, multilabel))
        counts.append(len(picks))
    if not out_x:
        return Synthesized(images[:0], y[:0], counts)
    return Synthesized(np.stack(out_x).astype(images.dtype), np.stack(out_y).astype(y.dtype), counts)


BOX_PASTE = "copy_paste"


@dataclass(frozen=True)
class BoxRule:
    """A detection rule, built: a drawer and the class of its boxes, or copy-paste of some classes' boxes."""

    rule: SynthesisRule
    drawer: Augmentation | None = None
    label: int | None = None
    paste: PasteParams | None = None
    classes: tuple[int, ...] | None = None


def _box_rule(number: int, rule: SynthesisRule, labels: Sequence[str]) -> BoxRule:
    name, usable = rule.augmentation, ", ".join((*DRAWERS, BOX_PASTE))
    if name == BOX_PASTE:
        if "directory" in rule.params:
            raise InvalidParamsError(f"augment rule {number}: copy_paste in an object detection project "
                                     "copies the project's own labelled boxes; it takes no patch directory")
        if rule.source is not None and "" in rule.source:
            raise InvalidParamsError(f"augment rule {number}: copy_paste's source names the classes to copy; "
                                     "\"\" (no box) has nothing to copy")
        if rule.label is not None and rule.source != [rule.label]:
            raise InvalidParamsError(f"augment rule {number}: copy_paste keeps each pasted defect's class; "
                                     f"drop label {rule.label!r} (source picks the classes to copy)")
        try:
            params = paste_params(**rule.params)
        except InvalidParamsError as exc:
            raise InvalidParamsError(f"augment rule {number}: {exc}") from None
        classes = None if rule.source is None else tuple(labels.index(s) for s in rule.source)
        return BoxRule(rule, paste=params, classes=classes)
    if name in DRAWERS:
        label = rule.label if rule.label is not None else (name if name in labels else None)
        if label is None:
            raise InvalidParamsError(f"augment rule {number}: {name} draws new defects; name their class "
                                     f"with label (one of {list(labels)})")
        try:
            return BoxRule(rule, drawer=build_augmentation(name, **rule.params), label=labels.index(label))
        except (KeyError, ValueError) as exc:
            raise InvalidParamsError(f"augment rule {number}: {exc}") from None
    if name in AUGMENTATIONS:
        raise InvalidParamsError(f"augment rule {number}: {name!r} is a classification-only augmentation (it "
                                 "changes an image without saying where, so it cannot make boxes); an object "
                                 f"detection project can use {usable}")
    raise InvalidParamsError(f"augment rule {number}: unknown augmentation {name!r}; an object detection "
                             f"project can use {usable}")


def build_box_rules(rules: Sequence[SynthesisRule], labels: Sequence[str]) -> list[BoxRule]:
    """The detection form of each rule; InvalidParamsError naming a rule whose augmentation cannot make
    boxes (classification-only), or whose labels or params are wrong."""
    built = []
    for number, rule in enumerate(rules, 1):
        _check_labels(number, rule, labels)
        built.append(_box_rule(number, rule, list(labels)))
    return built


def _box_matches(rows: Sequence[np.ndarray], source: list[str] | None, labels: Sequence[str]) -> np.ndarray:
    """(N,) bool: the images a detection rule's `source` selects ("" : images with no box)."""
    if source is None:
        return np.ones(len(rows), dtype=bool)
    wanted = [labels.index(s) for s in source if s]
    return np.array([(len(r) == 0 and "" in source) or bool(np.isin(r[:, 0], wanted).any()) for r in rows],
                    dtype=bool)


def synthesize_boxes(images: np.ndarray, y: np.ndarray, rules: Sequence[SynthesisRule], labels: Sequence[str],
                     rng: np.random.Generator) -> Synthesized:
    """Synthetic detection items for real (images, y of (k, 5) box targets), per rule: a drawer draws one new
    defect of the rule's label on each of round(per_item) copies of each matching image (source None: every
    image, "": images with no box), away from their boxes; copy_paste pastes round(per_item) cut-outs per
    image holding a box of the source classes onto defect-free images. Every new box is exact."""
    built = build_box_rules(rules, labels)
    images = np.asarray(images)
    rows = [np.asarray(t, dtype=np.float32).reshape(-1, 5) for t in y]
    if len(images):
        check_detection_set(images, rows)
    out_x: list[np.ndarray] = []
    out_y: list[np.ndarray] = []
    counts, notes = [], []
    for number, box_rule in enumerate(built, 1):
        rule = box_rule.rule
        if box_rule.paste is not None:
            donors = np.flatnonzero(_box_matches(rows, rule.source, labels)) if rule.source is not None \
                else np.flatnonzero([len(r) > 0 for r in rows])
            n = len(_picks(donors, rule.per_item, rng))
            pasted = paste_defects(images, box_targets(rows), n, rng, classes=box_rule.classes,
                                   **box_rule.paste.model_dump())
            out_x += list(pasted.images)
            out_y += list(pasted.targets)
            counts.append(pasted.made)
            if pasted.reason:
                notes.append(f"augment rule {number} (copy_paste): {pasted.made} of {n} items; "
                             f"{pasted.reason}")
            continue
        picks = _picks(np.flatnonzero(_box_matches(rows, rule.source, labels)), rule.per_item, rng)
        made = 0
        for i in picks:
            drawn = draw_boxed(images[i], box_rule.drawer, rng, rows[i][:, 1:])
            if drawn is not None:
                out_x.append(drawn.image)
                out_y.append(np.vstack([rows[i], np.array([[box_rule.label, *drawn.box]], np.float32)]))
                made += 1
        counts.append(made)
        if made < len(picks):
            notes.append(f"augment rule {number} ({rule.augmentation}): {made} of {len(picks)} items; the "
                         "rest found no visible draw away from their boxes")
    if not out_x:
        return Synthesized(images[:0], box_targets([]), counts, notes)
    return Synthesized(np.stack(out_x).astype(images.dtype), box_targets(out_y), counts, notes)
