"""Synthetic training items from per-project rules (plugins.specs.SynthesisRule): pure, seeded, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from plugins.augment.base import Augmentation, build_augmentation, check_image
from plugins.specs import SynthesisRule
from plugins.strategies import InvalidParamsError


@dataclass
class Synthesized:
    """Synthetic items (images and targets, in the layout of the real ones) and how many each rule made."""

    images: np.ndarray
    y: np.ndarray
    counts: list[int] = field(default_factory=list)


def build_rules(rules: Sequence[SynthesisRule], labels: Sequence[str]) -> list[Augmentation]:
    """The augmentation of each rule; InvalidParamsError naming the rule whose labels or params are wrong."""
    built = []
    for number, rule in enumerate(rules, 1):
        unknown = sorted({s for s in rule.source or [] if s and s not in labels} |
                         ({rule.label} - set(labels) if rule.label is not None else set()))
        if unknown:
            raise InvalidParamsError(f"augment rule {number}: labels {unknown} are not among the project's "
                                     f"labels {list(labels)}")
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
        chosen = np.flatnonzero(_matches(y, rule.source, labels, multilabel))
        whole, share = int(rule.per_item), rule.per_item - int(rule.per_item)
        picks = np.concatenate([np.repeat(chosen, whole), chosen[rng.random(len(chosen)) < share]]).astype(np.int64)
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
