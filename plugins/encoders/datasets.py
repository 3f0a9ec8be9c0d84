"""A data set's items replaced by a frozen encoder's embeddings, computed once and kept in the cache directory
(the offline counterpart of the service's per-task embedding cache, for `lsal simulate` and benchmarks)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from plugins.datasets import Dataset, default_cache_dir
from plugins.encoders.registry import build_encoder
from plugins.fileio import atomic_write


def embedded(data: Dataset, encoder_name: str, encoder_params: dict[str, Any] | None = None,
             dataset_key: str = "", cache_dir: str | Path | None = None, verbose: bool = True) -> Dataset:
    """`data` with x_train and x_test as float32 embeddings of `encoder_name`; read from
    `<cache>/embeddings/<key>.npz` when an earlier run of the same data set (`dataset_key`: its name and loader
    params) and encoder made it, else encoded now (with progress on stderr) and written there."""
    encoder = build_encoder(encoder_name, **(encoder_params or {}))
    if encoder.input_type != data.input_type:
        raise ValueError(f"encoder {encoder_name!r} reads {encoder.input_type}s, data set {data.name!r} holds "
                         f"{data.input_type}s")
    key = hashlib.sha256(json.dumps([data.name, dataset_key, encoder.identity(), len(data.x_train),
                                     len(data.x_test)]).encode()).hexdigest()[:24]
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / "embeddings" / f"{data.name}-{encoder_name}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return replace(data, x_train=stored["x_train"], x_test=stored["x_test"])
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        if verbose:
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"\rembedding {data.name} with {encoder_name}: {done}/{total} ({rate:.0f}/s)", end="",
                  file=sys.stderr, flush=True)

    x = encoder.encode(np.concatenate([_images_rgb(data.x_train), _images_rgb(data.x_test)])
                       if data.input_type == "image" else np.concatenate([data.x_train, data.x_test]), report)
    if verbose:
        print(file=sys.stderr)
    x_train, x_test = x[:len(data.x_train)], x[len(data.x_train):]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: np.savez(stream, x_train=x_train, x_test=x_test))
    return replace(data, x_train=x_train, x_test=x_test)


def _images_rgb(x: np.ndarray) -> np.ndarray:
    """(N, H, W) grayscale images as (N, H, W, 1): the encoder's channel axis."""
    return x[..., None] if x.ndim == 3 else x
