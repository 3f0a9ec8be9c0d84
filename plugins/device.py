"""Device selection: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch


from plugins.specs import MAX_SEED  # noqa: F401  (re-exported: seeds and devices are checked together)

DEVICE_TYPES = ("cpu", "cuda")


def check_device_name(name: str | None) -> str | None:
    """`name` if it names a device type we run on ('cpu', 'cuda', 'cuda:1'), else ValueError; whether that
    device exists is checked where the work runs (a CPU backend validates settings for a GPU worker)."""
    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {name!r} is not a device name; use 'cpu', 'cuda' or 'cuda:<index>'") from None
    if device.type not in DEVICE_TYPES or (device.index is not None and device.index > 64):
        raise ValueError(f"device {name!r}: lsal runs on {' or '.join(DEVICE_TYPES)}")
    return name


def pick_device(preferred: str | None = None) -> torch.device:
    """Return `preferred` if given, else CUDA when available, else the CPU."""
    if preferred:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {preferred!r} requested but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
