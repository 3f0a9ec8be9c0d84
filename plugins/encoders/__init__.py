"""Frozen pretrained encoders (MobileNetV2 for images, MiniLM for text) whose cached embeddings a small head
trains on; importing this package registers them (their heavy libraries load when one is built)."""

from plugins.encoders import image, text  # noqa: F401  (registers the encoders)
from plugins.encoders.base import Encoder, EncoderParams
from plugins.encoders.registry import ENCODERS, build_encoder

__all__ = ["ENCODERS", "Encoder", "EncoderParams", "build_encoder"]
