"""Model plugins: classifiers that train on the labeled set and compute a strategy's inputs."""

from __future__ import annotations

from typing import Any

from plugins.models.base import Augment, ModelParams, ModelPlugin, Progress
from plugins.registry import Registry

MODELS: Registry[type[ModelPlugin]] = Registry("model")


def build_model(name: str, n_classes: int, **params: Any) -> ModelPlugin:
    """Construct the model plugin registered as `name`."""
    return MODELS.get(name)(n_classes, **params)


from plugins.models import linear  # noqa: E402,F401  (registers the built-in models)
from plugins.models import classifier, ensemble  # noqa: E402,F401

__all__ = ["MODELS", "Augment", "ModelParams", "ModelPlugin", "Progress", "build_model"]
