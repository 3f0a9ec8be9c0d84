"""The model-plugin registry and the constructor by name."""

from __future__ import annotations

from typing import Any

from plugins.models.base import ModelPlugin
from plugins.registry import Registry

MODELS: Registry[type[ModelPlugin]] = Registry("model")


def build_model(name: str, n_classes: int, **params: Any) -> ModelPlugin:
    """Construct the model plugin registered as `name`."""
    return MODELS.get(name)(n_classes, **params)
