"""Task inputs by a kind's input type: what task["data"][kind.value_key] holds, loaded into model input.

One loader per input type ("image": a URL fetched and decoded at the project's size). A kind with a new
input type adds its loader here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.image_fetch import ImageFetcher, Skipped
from core.project_settings import ProjectSettings

# (fetcher, [(task id, value)], settings, pixel budget) -> (ids loaded, model input, skipped tasks)
Loader = Callable[[ImageFetcher, list[tuple[int, Any]], ProjectSettings, int | None],
                  tuple[list[int], np.ndarray, list[Skipped]]]


def _images(fetcher: ImageFetcher, items: list[tuple[int, Any]], settings: ProjectSettings,
            pixel_budget: int | None) -> tuple[list[int], np.ndarray, list[Skipped]]:
    return fetcher.load_many(items, settings.image_size, settings.channels, pixel_budget=pixel_budget)


LOADERS: dict[str, Loader] = {"image": _images}


def load_inputs(input_type: str, fetcher: ImageFetcher, items: list[tuple[int, Any]], settings: ProjectSettings,
                pixel_budget: int | None = None) -> tuple[list[int], np.ndarray, list[Skipped]]:
    """Load (task id, value) pairs as model input: (ids loaded, inputs in that order, skipped tasks)."""
    if input_type not in LOADERS:
        raise ValueError(f"no input loader for {input_type!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[input_type](fetcher, items, settings, pixel_budget)
