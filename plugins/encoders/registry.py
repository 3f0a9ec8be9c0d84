"""The encoder registry and the constructor by name (one loaded network per name and params per process)."""

from __future__ import annotations

import json
from typing import Any

from plugins.encoders.base import Encoder
from plugins.registry import Registry

ENCODERS: Registry[type[Encoder]] = Registry("encoder")
_LOADED: dict[str, Encoder] = {}


def build_encoder(name: str, **params: Any) -> Encoder:
    """The encoder registered as `name` with `params`, loaded once per process and reused."""
    key = f"{name}:{json.dumps(params, sort_keys=True, default=str)}"
    if key not in _LOADED:
        _LOADED[key] = ENCODERS.get(name)(**params)
    return _LOADED[key]
