"""The plain values that name plugins in settings: light (pydantic only), so reading settings imports no torch."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both take it
TORCHVISION_CACHE = "torchvision"  # `pretrained_path` meaning torchvision's own file in torch's cache


class StrategySpec(BaseModel):
    """A strategy by name with its hyperparameters, as stored in a project's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="registered strategy name, e.g. 'badge'")
    params: dict[str, Any] = Field(default_factory=dict, description="hyperparameters of that strategy")


class ModelSpec(BaseModel):
    """A model plugin by name with its hyperparameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("cnn", description="registered model plugin, e.g. 'cnn', 'logistic', 'ensemble'")
    params: dict[str, Any] = Field(default_factory=dict, description="hyperparameters of that model")
