"""The model-plugin protocol: train on the labeled set, describe the pool to a strategy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugins.device import MAX_SEED
from plugins.strategies import Input, InvalidParamsError, MissingInputError, PoolInputs

Progress = Callable[[dict[str, Any]], None]
# augment(image, label, rng) -> image: a training-time transform (see plugins.augment)
Augment = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
# Inputs of K samples per item. A strategy that needs them scores how an item's samples disagree, and one
# sample disagrees with nothing: with K < MIN_SAMPLES every score is 0 and the order is the pool's own.
SAMPLE_INPUTS = frozenset({Input.SAMPLES, Input.BOX_SAMPLES})
MIN_SAMPLES = 2


class ModelParams(BaseModel):
    """Hyperparameters every model plugin accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of initialisation, sampling and resampling")
    multilabel: bool = Field(
        False, description="several labels per item: y is an (N, C) 0/1 matrix and predict_proba gives "
                           "independent per-label (sigmoid) probabilities, rows not summing to 1",
    )


class ModelPlugin(ABC):
    """A classifier with the two verbs the loop needs: `fit` on labels, `pool_inputs` for a strategy."""

    name: ClassVar[str] = "model"
    Params: ClassVar[type[ModelParams]] = ModelParams
    provides: ClassVar[frozenset[Input]] = frozenset()
    reads_vectors: ClassVar[bool] = False  # trains on feature vectors (an encoder's embeddings), not only images

    def __init__(self, n_classes: int, **params: Any) -> None:
        if n_classes < 1:
            raise InvalidParamsError(f"n_classes must be >= 1, got {n_classes}")
        self.n_classes = n_classes
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            raise InvalidParamsError(f"invalid parameters for model {self.name}: {exc}") from None

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray, progress: Progress | None = None,
            augment: Augment | None = None) -> dict[str, float]:
        """Train on (x, y), warm-starting from the current weights when there are any; return metrics."""

    @abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N, n_classes) class probabilities (per-label probabilities when multilabel)."""

    @abstractmethod
    def pool_inputs(self, x_pool: np.ndarray, needs: frozenset[Input], x_labeled: np.ndarray,
                    y_labeled: np.ndarray) -> PoolInputs:
        """Compute only the strategy inputs in `needs` (and cheap extras) for the pool."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Tensors and JSON-able values that restore the trained model (see plugins.models.artifact)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""

    def config(self) -> dict[str, Any]:
        """JSON-serialisable {'name', 'n_classes', 'params'} that rebuilds an untrained twin."""
        return {"name": self.name, "n_classes": self.n_classes, "params": self.params.model_dump(mode="json")}

    def check_targets(self, y: np.ndarray, n: int) -> np.ndarray:
        """y checked against the item count and the class count: int64 class ids (N,), or for a multilabel
        model an (N, C) uint8 0/1 matrix; InvalidParamsError otherwise."""
        if self.params.multilabel:
            return multilabel_targets(y, n, self.n_classes)
        return class_ids(y, n, self.n_classes)

    def unsupported(self, needs: frozenset[Input]) -> frozenset[Input]:
        """The inputs in `needs` this model cannot compute; its samples too when they cannot disagree
        (sample_problem)."""
        missing = needs - self.provides
        sampled = needs & SAMPLE_INPUTS & self.provides
        if sampled and self.sample_problem() is not None:
            missing |= sampled
        return missing

    def sample_problem(self) -> str | None:
        """Why this model's per-item samples (samples, box_samples) cannot disagree with its params, and what
        to change; None when they can. Strategies that read samples score their disagreement."""
        return None

    def check_sample_count(self, needs: frozenset[Input], param: str) -> None:
        """MissingInputError when `needs` asks for samples but `param` (K) gives fewer than MIN_SAMPLES per
        item: the strategy that asked would score every item 0 (an order by task id, silently)."""
        sampled = needs & SAMPLE_INPUTS & self.provides
        problem = self._too_few_samples(param) if sampled else None
        if problem:
            raise MissingInputError(
                f"{' and '.join(sorted(i.value for i in sampled))} asked of a model whose samples cannot disagree, "
                f"so every score would be 0: {problem}")

    def _too_few_samples(self, param: str) -> str | None:
        """The sample_problem of a model whose K samples per item are its param `param` (None when K >= 2)."""
        k = getattr(self.params, param)
        if k >= MIN_SAMPLES:
            return None
        default = type(self.params).model_fields[param].default
        return (f"model {self.name!r} gives {k} sample per item ({param}={k}); set the model's {param} to "
                f"{MIN_SAMPLES} or more (default {default})")

    def _no_dropout(self) -> str | None:
        """The sample_problem of MC dropout with dropout 0: every sample is the same."""
        if getattr(self.params, "dropout", None) == 0:
            default = type(self.params).model_fields["dropout"].default
            return (f"model {self.name!r} has dropout=0, so its MC-dropout samples are all the same; set the "
                    f"model's dropout above 0 (default {default})")
        return None


def class_ids(y: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """y as int64 class ids, checked against the item count and the class count."""
    labels = np.asarray(y)
    if labels.shape != (n,):
        raise InvalidParamsError(f"expected {n} labels (one per item), got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(labels == np.round(labels)):
            raise InvalidParamsError("labels must be integer class ids")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise InvalidParamsError(f"labels must lie in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    return labels


def multilabel_targets(y: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """y as an (n, n_classes) uint8 0/1 matrix (an all-zero row: "none of these")."""
    targets = np.asarray(y)
    if targets.shape != (n, n_classes):
        raise InvalidParamsError(
            f"a multilabel model expects targets of shape ({n}, {n_classes}) (one 0/1 row per item), "
            f"got shape {targets.shape}"
        )
    if targets.size and not np.isin(targets, (0, 1)).all():
        raise InvalidParamsError("multilabel targets must be 0 or 1")
    return targets.astype(np.uint8)


def label_strata(targets: np.ndarray) -> np.ndarray:
    """(N, C) 0/1 targets -> (N,) int64: each item's rarest positive label, C for an item with none."""
    targets = np.asarray(targets)
    n_labels = targets.shape[1]
    counts = targets.sum(axis=0)
    rarity = np.where(targets > 0, counts[None, :], np.iinfo(np.int64).max)
    return np.where(targets.any(axis=1), rarity.argmin(axis=1), n_labels).astype(np.int64)
