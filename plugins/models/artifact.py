"""One file per trained model version: weights, the config that rebuilds the model, labels and metrics.

The file is a `torch.save` of a dict that holds only tensors and JSON values, read back with
`torch.load(weights_only=True)`: loading an artifact never unpickles arbitrary objects. Files are written
atomically, so a crash mid-write leaves the previous version (or nothing) under the final name.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from plugins.fileio import atomic_write
from plugins.models.base import ModelPlugin
from plugins.models.registry import build_model
from plugins.registry import UnknownPluginError
from plugins.strategies import InvalidParamsError

FORMAT_NAME = "lsal-model-artifact"
FORMAT_VERSION = 1
_PRIMITIVES = (bool, int, float, str, type(None))


class ArtifactError(ValueError):
    """An artifact that cannot be written or read; the message names the file and what was wrong."""


@dataclass(frozen=True)
class Artifact:
    """A loaded model version: the rebuilt model and what was recorded beside it."""

    model: ModelPlugin
    label_map: list[str]
    metrics: dict[str, Any]
    created_at: datetime
    format_version: int
    extra: dict[str, Any] = field(default_factory=dict)


def _check_state(value: Any, where: str) -> Any:
    """`value` with tensors moved to the CPU; ArtifactError naming `where` for anything not storable."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").clone()
    if type(value) in _PRIMITIVES:
        return value
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ArtifactError(f"{where} has a non-string key {bad[0]!r}; artifact dicts use string keys")
        return {k: _check_state(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_check_state(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise ArtifactError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; artifacts hold "
                        "torch tensors, str/int/float/bool/None, and dicts/lists/tuples of them")


def _json_value(value: Any, where: str) -> Any:
    """`value` as plain JSON types (numpy scalars become Python numbers); ArtifactError otherwise."""

    def plain(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"{type(obj).__qualname__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(value, default=plain))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{where} must be JSON-serialisable: {exc}") from None


def save_artifact(path: str | Path, model: ModelPlugin, *, label_map: list[str], metrics: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> Path:
    """Write `model` with its labels and metrics as one artifact file at `path`; return the path."""
    path = Path(path)
    if len(label_map) != model.n_classes:
        raise ArtifactError(f"label_map has {len(label_map)} names but the model has "
                            f"{model.n_classes} classes")
    if any(not isinstance(name, str) for name in label_map) or len(set(label_map)) != len(label_map):
        raise ArtifactError(f"label_map must be distinct strings, got {label_map!r}")
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "config": _json_value(model.config(), "model.config()"),
        "state": _check_state(model.state_dict(), "state_dict()"),
        "label_map": list(label_map),
        "metrics": _json_value(metrics, "metrics"),
        "extra": _json_value(extra or {}, "extra"),
    }
    return atomic_write(path, lambda stream: torch.save(payload, stream))


def _read_payload(path: Path) -> dict[str, Any]:
    """The artifact's dict, read without unpickling anything but tensors and primitives."""
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: refused to load: it holds more than tensors and plain values "
                            f"({first_line})") from None
    except (EOFError, RuntimeError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable model artifact (truncated or corrupt): {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{path}: not a model artifact (no {FORMAT_NAME!r} marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format version {version!r}; this code reads version "
                            f"{FORMAT_VERSION}")
    missing = {"created_at", "config", "state", "label_map", "metrics", "extra"} - payload.keys()
    if missing:
        raise ArtifactError(f"{path}: artifact lacks {', '.join(sorted(missing))}")
    return payload


def load_artifact(path: str | Path) -> Artifact:
    """Read the artifact at `path` and rebuild its trained model; ArtifactError when that is impossible."""
    path = Path(path)
    payload = _read_payload(path)
    config = payload["config"]
    try:
        model = build_model(config["name"], config["n_classes"], **config["params"])
    except UnknownPluginError as exc:
        raise ArtifactError(f"{path}: the artifact holds model {config['name']!r}, which is not registered "
                            f"here; available: {', '.join(exc.available)}") from None
    except (InvalidParamsError, ValidationError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: the stored model config {config!r} does not build a model: "
                            f"{exc}") from None
    try:
        model.load_state_dict(payload["state"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: the stored weights do not fit model {config['name']!r}: "
                            f"{exc}") from None
    label_map = list(payload["label_map"])
    if len(label_map) != model.n_classes:
        raise ArtifactError(f"{path}: {len(label_map)} label names for {model.n_classes} classes")
    return Artifact(model=model, label_map=label_map, metrics=dict(payload["metrics"]),
                    created_at=datetime.fromisoformat(payload["created_at"]),
                    format_version=payload["format_version"], extra=dict(payload["extra"]))
