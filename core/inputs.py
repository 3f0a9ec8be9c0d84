"""Task inputs by a kind's input type: what task["data"][kind.value_key] holds, loaded into model input.

One loader per input type ("image": a URL fetched and decoded at the project's size; "text": the text
itself). A project with an encoder trains on embeddings instead: its Embedder (core.embeddings) encodes the
raw inputs of the tasks its cache lacks. A kind with a new input type adds its loader here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.embeddings import Embedder
from core.image_fetch import ImageFetcher, Skipped
from core.project_settings import ProjectSettings

# (fetcher, [(task id, value)], settings, pixel budget, image size) -> (ids loaded, model input, skipped tasks)
Loader = Callable[[ImageFetcher, list[tuple[int, Any]], ProjectSettings, int | None, int | None],
                  tuple[list[int], np.ndarray, list[Skipped]]]
MAX_TEXT_CHARS = 100_000  # a longer text is cut here (an encoder reads a few hundred tokens of it at most)


def _images(fetcher: ImageFetcher, items: list[tuple[int, Any]], settings: ProjectSettings,
            pixel_budget: int | None, size: int | None) -> tuple[list[int], np.ndarray, list[Skipped]]:
    if size is not None:  # an encoder's own input size, in colour
        return fetcher.load_many(items, size, 3, pixel_budget=pixel_budget)
    return fetcher.load_many(items, settings.image_size, settings.channels, pixel_budget=pixel_budget)


def _texts(fetcher: ImageFetcher, items: list[tuple[int, Any]], settings: ProjectSettings,
           pixel_budget: int | None, size: int | None) -> tuple[list[int], np.ndarray, list[Skipped]]:
    ok: list[int] = []
    texts: list[str] = []
    skipped: list[Skipped] = []
    for task, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            skipped.append(Skipped(task, "no_text", "the task's text is empty or not a string"))
            continue
        ok.append(task)
        texts.append(value[:MAX_TEXT_CHARS])
    return ok, np.asarray(texts, dtype=object), skipped


LOADERS: dict[str, Loader] = {"image": _images, "text": _texts}


def load_inputs(input_type: str, fetcher: ImageFetcher, items: list[tuple[int, Any]], settings: ProjectSettings,
                pixel_budget: int | None = None, embedder: Embedder | None = None,
                cache_ids: Sequence[int | None] | None = None) -> tuple[list[int], np.ndarray, list[Skipped]]:
    """Load (task id, value) pairs as model input: (ids loaded, inputs in that order, skipped tasks); with an
    `embedder`, the inputs are the encoder's embeddings (cache_ids: each item's task id in the cache)."""
    if input_type not in LOADERS:
        raise ValueError(f"no input loader for {input_type!r}; known: {', '.join(sorted(LOADERS))}")
    loader = LOADERS[input_type]
    if embedder is None:
        if input_type == "text":
            raise ValueError("a text project trains on embeddings: set the project's encoder (e.g. "
                             '"encoder": {"name": "minilm"}) and a model that reads vectors (logistic)')
        return loader(fetcher, items, settings, pixel_budget, None)
    encoder = embedder.encoder
    if encoder.input_type != input_type:
        raise ValueError(f"encoder {encoder.name!r} reads {encoder.input_type}s, but this project's tasks hold "
                         f"{input_type}s; choose an encoder for {input_type}s")
    size = encoder.image_size()
    return embedder.embed(items, lambda chunk: loader(fetcher, chunk, settings, pixel_budget, size), cache_ids)
