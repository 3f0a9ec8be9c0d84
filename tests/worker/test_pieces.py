"""The worker's pure pieces: which tasks are labeled, held-out splits, priority scores, stream placement."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from redis import Redis

from core.label_config import kind_of
from core.labeled_set import split_tasks
from core.store import ProjectStore
from plugins.strategies import Ranking
from worker.jobs import place_in_order
from worker.publish import priority_scores
from worker.score import Scored
from plugins.holdout import assign_holdout, split_indices

CONFIG = ('<View><Image name="img" value="$image"/><Choices name="label" toName="img">'
          '<Choice value="ok"/><Choice value="defect"/></Choices></View>')
TARGET = kind_of(CONFIG)


def _ann(aid: int, label: str | None, when: str, cancelled: bool = False) -> dict:
    result = [] if label is None else TARGET.regions(np.eye(2)[TARGET.labels.index(label)], 0.5)
    return {"id": aid, "result": result, "updated_at": when, "was_cancelled": cancelled}


def test_split_tasks_takes_the_latest_live_annotation_and_explains_what_it_skips():
    tasks = [
        {"id": 1, "data": {"image": "a"}, "annotations": []},
        {"id": 2, "data": {"image": "b"}, "annotations": [_ann(10, "ok", "2026-01-01"),
                                                          _ann(11, "defect", "2026-01-02")]},
        {"id": 3, "data": {"image": "c"}, "annotations": [_ann(12, "ok", "2026-01-03", cancelled=True)]},
        {"id": 4, "data": {"image": "d"}, "annotations": [_ann(13, None, "2026-01-01")]},
        {"id": 5, "data": {}, "annotations": []},
        {"id": 6, "data": {"image": "f"}, "annotations": [_ann(14, "ok", "2026-01-05", cancelled=True),
                                                          _ann(15, "ok", "2026-01-04")]},
    ]
    sets = split_tasks(tasks, TARGET)
    assert sets.unlabeled == [(1, "a")]
    assert sets.labeled == [(2, "b", "defect"), (6, "f", "ok")]
    assert sorted(sets.annotation_ids) == [11, 15]
    assert [(s.task, s.reason) for s in sets.skipped] == [(4, "no_label"), (5, "no_image")]


def test_the_held_out_set_is_stratified_keeps_tiny_classes_for_training_and_is_deterministic():
    y = np.array([0] * 50 + [1] * 10 + [2] * 2)
    tasks = list(range(100, 162))
    sides = assign_holdout(tasks, y, 0.2, seed=1, known={})
    train, held = split_indices(tasks, sides)
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == len(y)
    assert np.bincount(y[held], minlength=3).tolist() == [10, 2, 0]
    assert assign_holdout(tasks, y, 0.2, seed=1, known={}) == sides  # deterministic under the seed
    assert assign_holdout(tasks, y, 0.2, seed=2, known={}) != sides


def test_priority_scores_put_rank_zero_first_for_label_studio():
    ranks = np.array([2, 0, 3, 1])
    scores = priority_scores(ranks)
    assert np.argsort(scores).tolist() == [1, 3, 0, 2] and scores.min() == 0 and scores.max() < 1


def test_new_tasks_slot_into_the_live_order_by_strategy_value_and_the_threshold_holds_back(redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 1)
    # live order: task 10 (value 0.9) -> 11 (0.5) -> 12 (0.1)
    store.set_published({"model_version": "lsal-v1-x-p1", "version": "v1"},
                        {10: {"rank": 0, "score": 0.0, "value": 0.9}, 11: {"rank": 1, "score": 1 / 3, "value": 0.5},
                         12: {"rank": 2, "score": 2 / 3, "value": 0.1}})
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.99, 0.01]])
    scored = Scored(task_ids=[20, 21, 22], outputs=probs, kind=TARGET, artifact=None, version="v1", strategy=None,
                    ranking=Ranking(order=np.arange(3), strategy="x", scores=np.array([0.7, 0.3, 0.05])))
    placed = place_in_order(SimpleNamespace(store=store), scored, threshold=None)
    order = sorted([10, 11, 12, 20, 21, 22], key=lambda t: placed[t]["score"] if t in placed
                   else store.task_rank(t)["score"])
    assert order == [10, 20, 11, 21, 12, 22]
    held = place_in_order(SimpleNamespace(store=store), scored, threshold=0.2)
    assert [held[t]["held_back"] for t in (20, 21, 22)] == [False, False, True]
    assert held[22]["score"] > 1.0 > held[21]["score"]
