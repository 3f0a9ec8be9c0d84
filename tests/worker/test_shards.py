"""Merging shards gives the order the unsharded strategy computes on the same inputs (every strategy kind)."""

from __future__ import annotations

import numpy as np
import pytest

from core.artifact_store import LocalArtifactStore, open_store
from plugins.models import build_model
from plugins.strategies import Input, build_strategy
from worker.shards import merge_order

STRATEGIES = ["entropy", "margin", "bald", "badge", "coreset", "typiclust", "egl", "random"]


@pytest.fixture(scope="module")
def model_and_pool():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (300, 8, 8, 1), dtype=np.uint8)
    y = np.arange(300) % 5
    model = build_model("logistic", 5, committee=4)
    model.fit(x[:60], y[:60])
    return model, x[60:], x[:60], y[:60]


@pytest.mark.parametrize("name", STRATEGIES)
def test_sharded_merge_equals_the_unsharded_order(model_and_pool, name):
    model, pool, x_lab, y_lab = model_and_pool
    params = {"batch_size": 7} if name in ("badge", "coreset", "typiclust") else {}
    strategy = build_strategy(name, seed=3, **params)
    needs = frozenset(strategy.required_inputs() | (strategy.optional_inputs() & model.provides) | {Input.PROBS})
    whole = strategy.rank(model.pool_inputs(pool, needs, x_lab, y_lab))

    parts = []
    shard_needs = needs - {Input.LABELED_EMBEDDINGS, Input.LABELED_LABELS}
    for start in range(0, len(pool), 70):  # 4 shards, the last one short
        chunk = pool[start:start + 70]
        inputs = model.pool_inputs(chunk, shard_needs, x_lab[:0], y_lab[:0])
        part = {"task_ids": np.arange(start, start + len(chunk)), "probs": np.asarray(inputs.probs)}
        from plugins.strategies import ScoreStrategy

        if isinstance(strategy, ScoreStrategy):
            part["scores"] = np.asarray(strategy.rank(inputs).scores)
        else:
            for key in ("samples", "embeddings"):
                if getattr(inputs, key) is not None and Input(key) in needs:
                    part[key] = np.asarray(getattr(inputs, key))
        parts.append(part)
    extras = model.pool_inputs(pool[:0], needs & {Input.LABELED_EMBEDDINGS, Input.LABELED_LABELS, Input.HEAD},
                               x_lab, y_lab)
    task_ids, probs, merged = merge_order(parts, strategy, extras)
    assert np.array_equal(task_ids, np.arange(len(pool)))
    assert np.array_equal(merged.order, whole.order), name


def test_local_store_round_trip_and_cleanup(tmp_path):
    store = open_store(str(tmp_path))
    assert isinstance(store, LocalArtifactStore)
    store.put("project-1/shards/run/00000.npz", b"abc")
    assert store.get("project-1/shards/run/00000.npz") == b"abc"
    assert store.delete_prefix("project-1/shards/run") == 1
    with pytest.raises(KeyError):
        store.get("project-1/shards/run/00000.npz")
    with pytest.raises(ValueError):
        store.put("../escape", b"x")
