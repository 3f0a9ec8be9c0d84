"""Device selection: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch


def pick_device(preferred: str | None = None) -> torch.device:
    """Return `preferred` if given, else CUDA when available, else the CPU."""
    if preferred:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {preferred!r} requested but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
