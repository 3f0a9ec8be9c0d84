"""Shared fixtures: synthetic but internally consistent pools for the acquisition engine."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from plugins.strategies import PoolInputs


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def build_pool(n: int = 120, c: int = 4, k: int = 8, d: int = 16, n_labeled: int = 20, seed: int = 0,
               dropout: float = 0.3, dtype: type = np.float64) -> PoolInputs:
    """A pool whose inputs agree with each other: class clusters in embedding space, a linear head,
    MC-dropout samples from that head, their mean as probabilities, labeled items from every class."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(c, d))
    y_pool = rng.integers(0, c, size=n)
    emb = centers[y_pool] + rng.normal(size=(n, d))
    y_lab = np.arange(n_labeled) % c
    lab_emb = centers[y_lab] + rng.normal(size=(n_labeled, d))
    weight = rng.normal(scale=0.5, size=(c, d))
    bias = rng.normal(scale=0.1, size=c)
    masks = rng.random((k, n, d)) > dropout
    logits = np.einsum("knd,cd->nkc", masks * emb[None] / (1 - dropout), weight) + bias
    samples = _softmax(logits)
    probs = samples.mean(axis=1)
    w_t, b_t = torch.as_tensor(weight), torch.as_tensor(bias)

    def head(z: torch.Tensor) -> torch.Tensor:
        return z @ w_t.to(z).T + b_t.to(z)

    return PoolInputs(
        probs=probs.astype(dtype), samples=samples.astype(dtype), embeddings=emb.astype(dtype),
        labeled_embeddings=lab_emb.astype(dtype), labeled_labels=y_lab,
        predicted_loss=rng.gamma(2.0, size=n).astype(dtype), head=head,
    )


@pytest.fixture
def make_pool() -> Callable[..., PoolInputs]:
    """Factory for consistent synthetic pools (see build_pool)."""
    return build_pool
