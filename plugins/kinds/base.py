"""The task-kind protocol: what one kind of Label Studio labeling config needs from the pipeline.

A kind is chosen by predicate over the parsed label config (its control and object tags), the way Label
Studio's own YOLO backend picks a control model per tag. It owns everything kind-specific and pure: what a
task's input is, how an annotation becomes a training target, which model families fit, how a model's
output becomes a Label Studio prediction and a line a person reads, which strategies have a sound form for
it, and its held-out metrics. The worker's retrain / rescore / publish and the backend's /predict are
written once against this interface; I/O (fetching images, Label Studio) stays in core/ and worker/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Tag:
    """One tag of a labeling config: a control (Choices, RectangleLabels, ...) or an object (Image, Text)."""

    tag: str  # lower case: "choices", "image", ...
    name: str
    to_name: tuple[str, ...] = ()
    value: str | None = None  # objects: "$field"
    labels: tuple[str, ...] = ()  # controls: the values a result stores, in config order
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelConfig:
    """A parsed labeling config: its control and object tags."""

    controls: tuple[Tag, ...]
    objects: tuple[Tag, ...]

    def object_named(self, name: str) -> Tag | None:
        """The object tag called `name`, or None."""
        return next((o for o in self.objects if o.name == name), None)


def bind_control(config: LabelConfig, control: Tag, object_tags: tuple[str, ...], min_labels: int,
                 title: str, noun: str) -> tuple[str, str, tuple[str, ...]] | None:
    """(to_name, value_key, labels) of the first object of `object_tags` that `control` labels, its labels
    checked (at least `min_labels`, no duplicates; `title` and `noun` name the tag and its labels in the
    message); None when it labels none of those; UnsupportedConfigError for a toName pointing nowhere or
    wrong labels."""
    for to_name in control.to_name:
        target = config.object_named(to_name)
        if target is None:
            raise UnsupportedConfigError(f"<{title} name={control.name!r}> points at toName={to_name!r}, "
                                         "which the config does not have")
        if target.tag not in object_tags or not str(target.value or "").startswith("$"):
            continue
        labels = control.labels
        if len(labels) < min_labels:
            raise UnsupportedConfigError(f"<{title} name={control.name!r}> needs at least {min_labels} "
                                         f"{noun}{'s' if min_labels != 1 else ''}, has {len(labels)}")
        if len(set(labels)) != len(labels):
            duplicates = sorted({x for x in labels if labels.count(x) > 1})
            raise UnsupportedConfigError(f"<{title} name={control.name!r}> has duplicate {noun} values "
                                         f"{duplicates}")
        return to_name, str(target.value)[1:], tuple(labels)
    return None


class UnsupportedConfigError(ValueError):
    """A labeling config no kind serves, or one a kind matches but that is wrong; the message says why."""


class UnusableAnswer(ValueError):
    """An annotation the kind cannot train on (e.g. a rotated box); the message says why, the task is skipped."""


@dataclass(frozen=True)
class TaskKind(ABC):
    """One served kind of task, bound to the control and object of a project's config."""

    name: ClassVar[str] = "kind"
    title: ClassVar[str] = "task"  # what a person calls it: "image classification"
    needs: ClassVar[str] = ""  # what a config must hold for this kind, for the message of a refused config
    input_type: ClassVar[str] = "image"  # what task["data"][value_key] holds: "image" (a URL) or "text"
    models: ClassVar[tuple[str, ...]] = ()  # model plugins that fit this kind
    primary_metric: ClassVar[str] = "holdout_accuracy"  # the held-out figure learning curves plot
    uncertainty_name: ClassVar[str] = "entropy"  # what `uncertainty` measures, in the words a person reads
    shardable: ClassVar[bool] = True  # a large rescore may be split into shard jobs (array outputs)
    default_strategy: ClassVar[str] = "badge"  # a new project's strategy when the defaults' has no form here
    gate_resamples: ClassVar[int] = 500  # the promotion gate's paired bootstrap resamples (fewer: costly metrics)
    confident_labels: ClassVar[bool] = False  # one class per task: confident pre-labels (plugins.confident) apply
    default_encoder: ClassVar[str | None] = None  # a new project's encoder (text needs one to become vectors)
    default_image_size: ClassVar[int | None] = None  # a new project's image size when the defaults' model does not fit

    from_name: str  # the control's name
    to_name: str  # the object's name
    value_key: str  # task["data"][value_key] holds the input
    labels: tuple[str, ...]

    @classmethod
    @abstractmethod
    def match(cls, config: LabelConfig) -> TaskKind | None:
        """The kind bound to `config` when it is this kind's; None when it is not; UnsupportedConfigError when
        it is, but wrong (too few labels, duplicates, a control pointing nowhere)."""

    @abstractmethod
    def answer(self, result: Sequence[Any]) -> Any | None:
        """The training target an annotation's result gives for this control (None: it gives none)."""

    @abstractmethod
    def encode(self, answers: Sequence[Any]) -> np.ndarray:
        """Training targets as the model's y array."""

    @abstractmethod
    def strata(self, y: np.ndarray) -> np.ndarray:
        """(N,) integer groups a held-out split is stratified by."""

    @abstractmethod
    def regions(self, output: np.ndarray, threshold: float) -> list[dict[str, Any]]:
        """A Label Studio prediction result for one task's model output."""

    @abstractmethod
    def summary(self, output: np.ndarray, threshold: float) -> dict[str, Any]:
        """What a person reads about one prediction: 'label' (text), 'confidence', 'uncertainty'."""

    @abstractmethod
    def uncertainty(self, outputs: np.ndarray) -> np.ndarray:
        """(N,) uncertainty of each task's output (nats)."""

    @abstractmethod
    def max_uncertainty(self) -> float:
        """The largest value `uncertainty` takes (a uniform output)."""

    @abstractmethod
    def metrics(self, y: np.ndarray, outputs: np.ndarray, threshold: float) -> dict[str, float]:
        """Held-out metrics of outputs against targets."""

    def not_ready(self, y: np.ndarray) -> str | None:
        """Why the labeled set `y` cannot train a model yet (None: it can)."""
        if len(np.unique(self.strata(y))) < 2:
            return "the labeled tasks cover fewer than 2 classes"
        return None

    def label_counts(self, y: np.ndarray) -> dict[str, int]:
        """Labeled items per label (an item with several labels counts once for each)."""
        y = np.asarray(y)
        if y.ndim == 2:
            return {label: int(n) for label, n in zip(self.labels, y.sum(axis=0))}
        counts = np.bincount(y.astype(np.int64), minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, counts) if n}

    def answers_report(self, answers: Sequence[Any]) -> dict[str, int]:
        """What reading `answers` changed or dropped, for the retrain's report (e.g. boxes clipped)."""
        return {}

    def synthesize(self, x: np.ndarray, y: np.ndarray, rules: Sequence[Any], rng: np.random.Generator) -> Any:
        """Synthetic training items the project's augment rules make from (x, y) (plugins.augment.synthesis)."""
        from plugins.augment.synthesis import synthesize  # torch-free import of the kinds

        return synthesize(x, y, rules, list(self.labels), rng, multilabel=bool(self.model_params().get("multilabel")))

    def model_params(self) -> dict[str, Any]:
        """Model hyperparameters this kind fixes (e.g. multilabel outputs)."""
        return {}

    def gate_metric(self, threshold: float) -> Callable[[Any, Any], float]:
        """The primary held-out metric as f(y, outputs), for the promotion gate's paired bootstrap."""
        metrics = self.metrics

        def value(y: Any, outputs: Any) -> float:
            return float(metrics(y, outputs, threshold).get(self.primary_metric, np.nan))  # NaN: undefined here

        return value

    def no_model_outputs(self, y_train: np.ndarray, n: int) -> Any | None:
        """What knowing no more than the training labels predicts for `n` items (the first version's baseline
        at the promotion gate); None when the kind has no such baseline."""
        return None

    def check_strategy(self, strategy: Any) -> None:
        """Raise ValueError, saying what to choose instead, when `strategy` has no sound form for this kind."""

    def describe(self) -> dict[str, Any]:
        """JSON-able description for status and artifacts."""
        return {"kind": self.name, "from_name": self.from_name, "to_name": self.to_name,
                "value_key": self.value_key, "labels": list(self.labels)}
