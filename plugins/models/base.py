"""The model-plugin protocol: train on the labeled set, describe the pool to a strategy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugins.device import MAX_SEED
from plugins.strategies import Input, InvalidParamsError, PoolInputs

Progress = Callable[[dict[str, Any]], None]
# augment(image, label, rng) -> image: a training-time transform (see plugins.augment)
Augment = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


class ModelParams(BaseModel):
    """Hyperparameters every model plugin accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of initialisation, sampling and resampling")


class ModelPlugin(ABC):
    """A classifier with the two verbs the loop needs: `fit` on labels, `pool_inputs` for a strategy."""

    name: ClassVar[str] = "model"
    Params: ClassVar[type[ModelParams]] = ModelParams
    provides: ClassVar[frozenset[Input]] = frozenset()

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
        """(N, n_classes) class probabilities."""

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

    def unsupported(self, needs: frozenset[Input]) -> frozenset[Input]:
        """The inputs in `needs` this model cannot compute."""
        return needs - self.provides
