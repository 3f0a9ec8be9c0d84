"""Slow, obviously correct references shared by the strategy tests (as fixtures: no test imports another)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from plugins.boxes import BoxEvidence


def _kmeanspp(g: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding on the rows of g (first: largest norm; then D^2 draws), the rest by norm; and the norms."""
    n = len(g)
    sq = np.array([[np.sum((g[i] - g[j]) ** 2) for j in range(n)] for i in range(n)])
    norms = np.linalg.norm(g, axis=1)
    by_norm = sorted(range(n), key=lambda i: (-norms[i], i))
    picked = [by_norm[0]]
    while len(picked) < min(k, n):
        weights = [min(sq[i][j] for j in picked) for i in range(n)]
        total = sum(weights)
        if total <= 0:
            picked += [i for i in by_norm if i not in picked][: min(k, n) - len(picked)]
            break
        target, acc = rng.random() * total, 0.0
        for i, w in enumerate(weights):
            acc += w
            if acc > target:
                picked.append(i)
                break
    return np.array(picked + [i for i in by_norm if i not in picked]), norms


@pytest.fixture
def kmeanspp_reference() -> Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """The slow k-means++ seeding BADGE is checked against."""
    return _kmeanspp


def _box_inputs(n: int, c: int = 3, k: int = 6, seed: int = 0, mean_boxes: float = 1.5) -> dict:
    """Detector evidence over n images: a Poisson number of boxes each (some none), K MC-dropout passes of
    each box's C + 1 distribution (last column background) around a box logit, their mean as the box's
    distribution, and a per-box IoU under perturbation in [0.3, 1]."""
    rng = np.random.default_rng([seed, 7])
    counts = rng.poisson(mean_boxes, size=n)
    image = np.repeat(np.arange(n), counts).astype(np.int64)
    m = len(image)
    logits = rng.normal(scale=rng.uniform(0.5, 4.0, size=(m, 1)), size=(m, c + 1))
    passes = logits[:, None, :] + rng.normal(scale=rng.uniform(0.1, 1.5, size=(m, 1, 1)), size=(m, k, c + 1))
    passes = np.exp(passes - passes.max(axis=-1, keepdims=True))
    samples = passes / passes.sum(axis=-1, keepdims=True)
    return {"boxes": BoxEvidence(n_images=n, image=image, probs=samples.mean(axis=1)), "box_samples": samples,
            "box_iou": rng.uniform(0.3, 1.0, size=m)}


@pytest.fixture
def box_inputs() -> Callable[..., dict]:
    """Factory of consistent detector evidence: {'boxes', 'box_samples', 'box_iou'} for PoolInputs."""
    return _box_inputs
