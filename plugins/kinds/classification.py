"""Classification kinds: an object (an <Image>) classified by a <Choices> control, one choice or several."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score

from plugins.kinds.base import LabelConfig, TaskKind, UnsupportedConfigError, bind_control
from plugins.kinds.registry import register
from plugins.promotion import accuracy, class_shares

_EPS = 1e-12


def _bound_choices(cls: type[ClassificationKind], config: LabelConfig, multiple: bool) -> ClassificationKind | None:
    """The first <Choices> (single or multiple, as asked) on an object of `cls.object_tags`, checked."""
    for control in config.controls:
        if control.tag != "choices" or (control.attrs.get("choice") == "multiple") != multiple:
            continue
        bound = bind_control(config, control, cls.object_tags, cls.min_labels, "Choices", "choice")
        if bound is not None:
            target = config.object_named(bound[0])
            if target is not None and target.attrs.get("valuetype", target.attrs.get("valueType")) == "url":
                raise UnsupportedConfigError(f"<{target.tag.capitalize()} name={target.name!r}> loads its text from a "
                                             "URL (valueType=\"url\"); put the text itself in the task's data")
            return cls(control.name, *bound)
    return None


@dataclass(frozen=True)
class ClassificationKind(TaskKind):
    """What single- and multi-label classification share: a Choices control on one object."""

    object_tags: ClassVar[tuple[str, ...]] = ("image",)
    min_labels: ClassVar[int] = 2
    models = ("logistic", "cnn", "ensemble")

    def _chosen(self, result: Sequence[Any]) -> list[str] | None:
        """The choices an annotation's result made for this control (None: no region for it)."""
        for region in result or []:
            if isinstance(region, dict) and region.get("from_name") == self.from_name:
                choices = (region.get("value") or {}).get("choices")
                return [c for c in choices if isinstance(c, str)] if isinstance(choices, list) else []
        return None

    def _region(self, chosen: list[str]) -> dict[str, Any]:
        return {"from_name": self.from_name, "to_name": self.to_name, "type": "choices",
                "value": {"choices": chosen}}


@register("image_classification")
@dataclass(frozen=True)
class ImageClassification(ClassificationKind):
    """One choice per image: softmax outputs, entropy as uncertainty, accuracy and macro-F1 held out."""

    title = "image classification"
    confident_labels = True
    needs = 'an <Image value="$field"> with a single-choice <Choices toName=...> (at least 2 choices)'

    @classmethod
    def match(cls, config: LabelConfig) -> ImageClassification | None:
        return _bound_choices(cls, config, multiple=False)

    def answer(self, result: Sequence[Any]) -> str | None:
        chosen = self._chosen(result)
        return chosen[0] if chosen and chosen[0] in self.labels else None

    def encode(self, answers: Sequence[Any]) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.labels)}
        return np.asarray([index[a] for a in answers], dtype=np.int64)

    def strata(self, y: np.ndarray) -> np.ndarray:
        return np.asarray(y, dtype=np.int64)

    def regions(self, output: np.ndarray, threshold: float) -> list[dict[str, Any]]:
        return [self._region([self.labels[int(np.argmax(output))]])]

    def summary(self, output: np.ndarray, threshold: float) -> dict[str, Any]:
        return {"label": self.labels[int(np.argmax(output))], "confidence": float(np.max(output)),
                "uncertainty": float(self.uncertainty(np.asarray(output)[None])[0])}

    def uncertainty(self, outputs: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(outputs, dtype=np.float64), _EPS, 1.0)
        return -(p * np.log(p)).sum(axis=1)

    def max_uncertainty(self) -> float:
        return float(np.log(len(self.labels)))

    def metrics(self, y: np.ndarray, outputs: np.ndarray, threshold: float) -> dict[str, float]:
        predicted = np.asarray(outputs).argmax(axis=1)
        return {"holdout_accuracy": float(accuracy_score(y, predicted)),
                "holdout_macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0))}

    def gate_metric(self, threshold: float) -> Callable[[Any, Any], float]:
        """Held-out accuracy (the primary metric), computed directly: the gate resamples it hundreds of times."""
        return accuracy

    def no_model_outputs(self, y_train: np.ndarray, n: int) -> np.ndarray:
        """The training labels' class shares, for every item."""
        return class_shares(y_train, n, len(self.labels))


@register("image_multilabel")
@dataclass(frozen=True)
class ImageMultiLabel(ClassificationKind):
    """Several choices per image (<Choices choice="multiple">): one independent sigmoid per label, a task's
    uncertainty the sum of its labels' Bernoulli entropies; ticked = probability >= the project's threshold.
    An annotation that ticks nothing says "none of these" (every label negative: defect-free images count)."""

    title = "multi-label image classification"
    needs = 'an <Image value="$field"> with a <Choices choice="multiple" toName=...> (at least 2 choices)'
    primary_metric = "holdout_micro_f1"
    uncertainty_name = "label entropy"

    @classmethod
    def match(cls, config: LabelConfig) -> ImageMultiLabel | None:
        return _bound_choices(cls, config, multiple=True)

    def answer(self, result: Sequence[Any]) -> tuple[str, ...] | None:
        chosen = self._chosen(result) or []
        if any(c not in self.labels for c in chosen):
            return None
        return tuple(c for c in self.labels if c in chosen)

    def encode(self, answers: Sequence[Any]) -> np.ndarray:
        return np.asarray([[label in a for label in self.labels] for a in answers], dtype=np.uint8).reshape(
            len(answers), len(self.labels))

    def strata(self, y: np.ndarray) -> np.ndarray:
        """Each item's rarest positive label (len(labels) for an item with none)."""
        y = np.asarray(y)
        counts = y.sum(axis=0)
        rarity = np.where(y > 0, counts[None, :], np.iinfo(np.int64).max)
        return np.where(y.any(axis=1), rarity.argmin(axis=1), y.shape[1]).astype(np.int64)

    def _ticked(self, output: np.ndarray, threshold: float) -> list[str]:
        return [label for label, p in zip(self.labels, output) if p >= threshold]

    def regions(self, output: np.ndarray, threshold: float) -> list[dict[str, Any]]:
        return [self._region(self._ticked(output, threshold))]

    def summary(self, output: np.ndarray, threshold: float) -> dict[str, Any]:
        ticked = self._ticked(output, threshold)
        sure = np.maximum(output, 1.0 - np.asarray(output))
        return {"label": ", ".join(ticked) or "(none)", "confidence": float(np.min(sure)),
                "uncertainty": float(self.uncertainty(np.asarray(output)[None])[0])}

    def uncertainty(self, outputs: np.ndarray) -> np.ndarray:
        p = np.clip(np.asarray(outputs, dtype=np.float64), _EPS, 1 - _EPS)
        return -(p * np.log(p) + (1 - p) * np.log(1 - p)).sum(axis=1)

    def max_uncertainty(self) -> float:
        return float(len(self.labels) * np.log(2.0))

    def no_model_outputs(self, y_train: np.ndarray, n: int) -> np.ndarray:
        """Each label's share among the training items, for every item."""
        y_train = np.asarray(y_train, dtype=np.float64).reshape(-1, len(self.labels))
        share = y_train.mean(axis=0) if len(y_train) else np.zeros(len(self.labels))
        return np.tile(share, (n, 1))

    def metrics(self, y: np.ndarray, outputs: np.ndarray, threshold: float) -> dict[str, float]:
        y = np.asarray(y).astype(np.int64)
        predicted = (np.asarray(outputs) >= threshold).astype(np.int64)
        out = {"holdout_micro_f1": float(f1_score(y, predicted, average="micro", zero_division=0)),
               "holdout_macro_f1": float(f1_score(y, predicted, average="macro", zero_division=0)),
               "holdout_subset_accuracy": float((y == predicted).all(axis=1).mean())}
        recalls = recall_score(y, predicted, average=None, zero_division=0)
        out.update({f"holdout_recall[{label}]": float(r) for label, r in zip(self.labels, recalls)})
        return out

    def model_params(self) -> dict[str, Any]:
        return {"multilabel": True}

    def check_strategy(self, strategy: Any) -> None:
        from plugins.strategies import multilabel_strategies  # the kinds stay importable without torch

        unsound = sorted(_unsound_names(strategy))
        if unsound:
            raise ValueError(f"strategy {', '.join(unsound)} has no multi-label form: a multi-label project "
                             f"({self.from_name!r} ticks several choices) can use "
                             f"{', '.join(multilabel_strategies())}")


class TextKind:
    """What the text kinds change in their image twins: the object is a <Text> (or <HyperText>) holding the
    text itself, which a frozen encoder (MiniLM) turns into the embedding a head (logistic committee or MC-dropout MLP)
    trains on."""

    object_tags: ClassVar[tuple[str, ...]] = ("text", "hypertext")
    input_type = "text"
    models = ("logistic", "mlp")
    default_encoder = "minilm"
    shardable = True


@register("text_classification")
@dataclass(frozen=True)
class TextClassification(TextKind, ImageClassification):
    """One choice per text: the single-label classification kind on <Text> tasks."""

    title = "text classification"
    needs = 'a <Text value="$field"> with a single-choice <Choices toName=...> (at least 2 choices)'


@register("text_multilabel")
@dataclass(frozen=True)
class TextMultiLabel(TextKind, ImageMultiLabel):
    """Several choices per text (<Choices choice="multiple">): the multi-label kind on <Text> tasks."""

    title = "multi-label text classification"
    needs = 'a <Text value="$field"> with a <Choices choice="multiple" toName=...> (at least 2 choices)'


def _unsound_names(strategy: Any) -> set[str]:
    """The names of the strategies in the tree (a strategy and those it wraps) without a multi-label form."""
    own = set() if type(strategy).multilabel else {strategy.name}
    return own.union(*(_unsound_names(child) for child in strategy.children()))
