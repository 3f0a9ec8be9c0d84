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


class EncoderSpec(BaseModel):
    """A frozen pretrained encoder by name with its parameters: the project's model trains on its embeddings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="registered encoder: 'mobilenet_v2' (images) or 'minilm' (text)")
    params: dict[str, Any] = Field(default_factory=dict, description="parameters of that encoder")


class SynthesisRule(BaseModel):
    """Synthetic training items a retrain adds: an augmentation applied to copies of matching real items.

    Defect synthesis (the seeds' recipe): `{"augmentation": "scratch", "source": ["ok"], "label": "scratch"}`
    draws scratches on defect-free images and trains on them as scratches; class-conditional augmentation:
    `{"augmentation": "stain", "source": ["stain"]}` multiplies the rare class's looks, label kept.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    augmentation: str = Field(description="registered augmentation: scratch, stain, dent, copy_paste")
    params: dict[str, Any] = Field(default_factory=dict, description="its parameters")
    source: list[str] | None = Field(
        None, max_length=1000, description="labels of the real items it is applied to (None: every item; \"\" in "
                                           "a multi-label project: items with no label ticked)")
    label: str | None = Field(None, description="the label the synthetic item gets (None: its source's; in a "
                                                "multi-label project it is added to the source's)")
    per_item: float = Field(1.0, gt=0, le=20, description="synthetic items per matching real item (a fraction: "
                                                          "that share of them, drawn at random)")
