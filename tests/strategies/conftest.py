"""Slow, obviously correct references shared by the strategy tests (as fixtures: no test imports another)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


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
