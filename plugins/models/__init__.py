"""Model plugins: classifiers that train on the labeled set and compute a strategy's inputs."""

from __future__ import annotations

from plugins.models.base import Augment, ModelParams, ModelPlugin, Progress
from plugins.models.registry import MODELS, build_model

from plugins.models import linear  # noqa: F401  (registers the built-in models)
from plugins.models import classifier, ensemble  # noqa: F401
from plugins.models import detector  # noqa: F401  (the object detector: torchvision, MobileNetV2)
from plugins.models import mlp  # noqa: F401  (an MC-dropout MLP head on feature vectors)

__all__ = ["MODELS", "Augment", "ModelParams", "ModelPlugin", "Progress", "build_model"]
