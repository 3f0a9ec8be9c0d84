"""The logistic model computes a strategy's inputs when the labeled set passed along is empty."""

import numpy as np

from plugins.models import build_model
from plugins.strategies import Input


def test_pool_inputs_with_an_empty_labeled_set():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8), np.arange(40) % 4
    model = build_model("logistic", 4, committee=1)
    model.fit(x, y)
    inputs = model.pool_inputs(x[:5], frozenset({Input.EMBEDDINGS, Input.HEAD}), x[:0], y[:0])
    assert inputs.embeddings.shape == (5, 64) and inputs.labeled_embeddings.shape == (0, 64)
