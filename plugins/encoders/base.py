"""The encoder protocol: a frozen pretrained network that turns one task's input into one embedding.

An encoder is chosen per project (`encoder` in the project's settings). Its embeddings are what the
project's model (a small head, e.g. the logistic committee) trains and scores on; they are cached per task
(core.embedding_cache), so a retrain needs no image or text fetch. `identity` names the exact network and
preprocessing: a cached embedding is reused only under the same identity.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugins.strategies import InvalidParamsError

# progress(done, total): called after each batch of a long encode
EncodeProgress = Callable[[int, int], None]


class EncoderParams(BaseModel):
    """Parameters every encoder accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(64, ge=1, le=4096, description="inputs encoded per forward pass")
    checkpoint: str | None = Field(None, description="a local checkpoint (inside LSAL_WEIGHTS_DIR) instead of "
                                                     "the shipped pretrained weights")


class Encoder(ABC):
    """A frozen network: `encode` maps a batch of inputs of `input_type` to (N, dim) float32 embeddings."""

    name: ClassVar[str] = "encoder"
    input_type: ClassVar[str] = "image"  # the kind input type it reads: "image" or "text"
    Params: ClassVar[type[EncoderParams]] = EncoderParams

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            raise InvalidParamsError(f"invalid parameters for encoder {self.name}: {exc}") from None

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one embedding."""

    @abstractmethod
    def weights_digest(self) -> str:
        """A digest of the weights in use (the shipped file's SHA-256, or the checkpoint's)."""

    @abstractmethod
    def encode(self, inputs: np.ndarray, progress: EncodeProgress | None = None) -> np.ndarray:
        """(N, dim) float32 embeddings of N inputs (images (N, H, W, C) uint8, or an object array of texts)."""

    def identity(self) -> str:
        """Encoder name, weights digest and the params that change an embedding: the cache's key."""
        params = self.params.model_dump(exclude={"batch", "checkpoint", "device"})
        return f"{self.name}:{self.weights_digest()[:16]}:{json.dumps(params, sort_keys=True)}"

    def image_size(self) -> int | None:
        """The square size images are loaded at for this encoder (None: it reads no images)."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-able description for status and artifacts."""
        return {"name": self.name, "identity": self.identity(), "dim": self.dim,
                "params": self.params.model_dump(mode="json")}
