"""scikit-learn's bundled digits as PNG files: the images the demo, the benchmarks and the tests label.

A digit (8x8, values 0..16) is written as a grayscale PNG, scaled to 0..255 and upscaled `scale` times
(nearest; 4 by default: 32x32). `prepare_digits` shuffles them into tasks and a held-out test set.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N_DIGITS = 1797  # scikit-learn's bundled digits


def digit_pixels(image: np.ndarray, scale: int = 4) -> np.ndarray:
    """An 8x8 digit (values 0..16) as an (8*scale)x(8*scale) uint8 grayscale image (nearest upscaling)."""
    img = np.rint(image * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1) if scale > 1 else img


def write_digits(folder: Path, indices: Iterable[int], scale: int = 4,
                 name: str = "digit_{:04d}.png") -> tuple[list[Path], list[str]]:
    """Write the digits at `indices` as PNG files into `folder` (created if missing); (paths, classes)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for i in indices:
        path = folder / name.format(int(i))
        Image.fromarray(digit_pixels(digits.images[i], scale)).save(path)  # 2-D uint8: mode "L"
        paths.append(path)
        labels.append(str(int(digits.target[i])))
    return paths, labels


@dataclass
class DigitData:
    files: list[Path]  # the task images, in import order
    labels: list[str]  # the true class of each file
    test_x: np.ndarray  # (N, size, size, 1) uint8, preprocessed exactly as the worker does
    test_y: np.ndarray  # (N,) int


def prepare_digits(folder: Path, n_tasks: int, seed: int = 0, size: int = 8) -> DigitData:
    """Write `n_tasks` shuffled digits as PNG files into `folder` (emptied first); the rest is the test set."""
    from sklearn.datasets import load_digits

    from plugins.images import resize

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    pool, held = order[:n_tasks], order[n_tasks:]
    shutil.rmtree(folder, ignore_errors=True)
    files, labels = write_digits(folder, pool)
    # a PNG round trip is lossless, so decoding is skipped; the resize is the worker's
    test_x = np.stack([resize(digit_pixels(digits.images[i]), (size, size)) for i in held])[..., None]
    return DigitData(files=files, labels=labels, test_x=test_x, test_y=digits.target[held].astype(np.int64))
