"""The review job: after a retrain, under the project lock, the labels the model doubts are stored and
marked on their tasks; no annotation is touched, and a job that lost its lock writes nothing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from redis import Redis
from rq import Queue
from sklearn.datasets import load_digits

from core.config import get_settings
from core.label_config import kind_of
from core.project_settings import ProjectSettings
from core.queueing import fetch_job, lock_key
from core.store import ProjectStore
from worker.locking import LockLostError
from worker.review import VIEW_TITLE, view_data, with_issue

CONFIG = ('<View><Image name="img" value="$image"/><Choices name="label" toName="img">'
          '<Choice value="zero"/><Choice value="one"/><Choice value="two"/></Choices></View>')
KIND = kind_of(CONFIG)
PROJECT = 5
FLIPPED = (5, 50, 90)  # items whose annotator gave the next class instead of the true one


def _digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    keep = np.flatnonzero(data.target < 3)[:120]
    return (data.images[keep] * (255 / 16)).astype(np.uint8), data.target[keep].astype(np.int64)


class FakeLabelStudio:
    """The calls the worker makes, on tasks held in memory; records what it was asked to write."""

    def __init__(self, tasks: list[dict], redis: Redis) -> None:
        self.tasks_ = tasks
        self.redis = redis
        self.writes: dict[int, dict] = {}
        self.views_: list[dict] = []
        self.read_under_lock: list[bool] = []

    def project(self, project: int) -> dict:
        return {"id": project, "label_config": CONFIG, "num_tasks_with_annotations": len(self.tasks_)}

    def tasks(self, project: int, ids=None, **_: object) -> list[dict]:
        self.read_under_lock.append(bool(self.redis.exists(lock_key(project))))
        wanted = None if ids is None else {int(i) for i in ids}
        return [copy.deepcopy(t) for t in self.tasks_ if wanted is None or t["id"] in wanted]

    def update_task_data(self, task: int, data: dict) -> None:
        self.writes[task] = data
        next(t for t in self.tasks_ if t["id"] == task)["data"] = data

    def views(self, project: int) -> list[dict]:
        return self.views_

    def save_view(self, project: int, data: dict, view: int | None = None) -> dict:
        self.views_.append({"id": 9, "data": data})
        return self.views_[-1]

    def import_predictions(self, *args, **kwargs):  # a rescore is not run here
        raise AssertionError("the review publishes nothing")


@pytest.fixture
def world(redis_url, monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "unused")
    monkeypatch.delenv("LSAL_DEFAULTS", raising=False)
    get_settings.cache_clear()
    x, y = _digits()
    given = y.copy()
    given[list(FLIPPED)] = (y[list(FLIPPED)] + 1) % 3
    tasks = [{"id": 100 + i, "data": {"image": f"/data/{i}.png", "site": "line 3"},
              "annotations": [{"id": 1000 + i, "result": KIND.regions(np.eye(3)[given[i]], 0.5),
                               "updated_at": "2026-01-01", "was_cancelled": False}]}
             for i in range(len(y))]
    redis = Redis.from_url(redis_url)
    ls = FakeLabelStudio(tasks, redis)
    monkeypatch.setattr("worker.context.client_for", lambda *args: ls)
    images = {100 + i: x[i] for i in range(len(y))}
    monkeypatch.setattr("worker.context.JobContext.inputs",
                        lambda self, kind, items: ([t for t, _ in items], np.stack([images[t] for t, _ in items]), []))
    store = ProjectStore(redis, PROJECT)
    store.set_settings(ProjectSettings(model={"name": "logistic", "params": {"committee": 1}}, image_size=8,
                                       channels=1, task_fields=True, min_labels=10, review=True))
    yield ls, store, tasks
    get_settings.cache_clear()


def test_the_review_job_stores_the_flipped_labels_first_and_marks_their_tasks_only(world):
    from worker.jobs import review

    ls, store, tasks = world
    before = [copy.deepcopy(t["annotations"]) for t in tasks]
    result = review(PROJECT)
    assert result["status"] == "reviewed" and result["reviewed"] == 120 and result["folds"] == 5
    assert ls.read_under_lock and all(ls.read_under_lock)  # Label Studio is read after taking the lock
    record = store.review()
    flagged = [i for i in record["items"] if i["flagged"]]
    assert {i["task"] for i in record["items"][:3]} == {100 + i for i in FLIPPED}
    assert len(flagged) >= 3 and record["flagged"] == len(flagged)
    assert {i["task"] for i in flagged} >= {100 + i for i in FLIPPED}
    truth = _digits()[1][5]
    first = next(i for i in record["items"] if i["task"] == 105)
    assert (first["given"], first["predicted"]) == (KIND.labels[(truth + 1) % 3], KIND.labels[truth])
    assert first["confidence"] > 0.5 and first["flagged"]
    # the flagged tasks carry the reason in their data, every other field kept; the rest are not written
    assert set(ls.writes) == {i["task"] for i in flagged}
    data = ls.writes[105]
    assert data["image"] == "/data/5.png" and data["site"] == "line 3"
    assert data["lsal_issue_rank"] == first["rank"] and f"{first['given']!r} doubted" in data["lsal_issue_reason"]
    assert f"says {first['predicted']!r}" in data["lsal_issue_reason"]
    assert [t["annotations"] for t in tasks] == before  # nothing an annotator wrote is changed
    assert [v["data"]["title"] for v in ls.views_] == [VIEW_TITLE]
    assert store.info()["last_review"]["status"] == "reviewed"

    # a second review with a corrected label clears that task's fields and keeps the one tab
    tasks[5]["annotations"][0]["result"] = KIND.regions(np.eye(3)[truth], 0.5)
    ls.writes.clear()
    review(PROJECT)
    assert 105 in ls.writes and not any(k.startswith("lsal_issue") for k in ls.writes[105])
    assert len(ls.views_) == 1


def test_a_review_that_lost_its_lock_writes_nothing(world, monkeypatch):
    import worker.review as module
    from worker.jobs import review
    from worker.runner import JobContext

    ls, store, _ = world
    made = []
    create = JobContext.create
    monkeypatch.setattr("worker.runner.JobContext.create", lambda project: made.append(create(project)) or made[-1])
    judge = module.review_labels

    def then_lose(*args, **kwargs):
        out = judge(*args, **kwargs)
        made[-1].lease.lose("test: another job took the lock")
        return out

    monkeypatch.setattr(module, "review_labels", then_lose)
    with pytest.raises(LockLostError):
        review(PROJECT)
    assert store.review() is None and not ls.writes
    assert store.info()["last_review"]["status"] == "failed"


def test_a_retrain_queues_the_review_behind_its_rescore(world, redis_url):
    from worker.jobs import retrain

    _, store, _ = world
    assert ProjectSettings().review is False  # off unless a project turns it on
    result = retrain(PROJECT)
    assert result["status"] == "trained" and result["review_job"]
    queue = Queue("lsal", connection=Redis.from_url(redis_url))
    assert queue.job_ids == [result["rescore_job"], result["review_job"]]  # the order goes live first
    assert fetch_job(Redis.from_url(redis_url), result["review_job"]).meta["kind"] == "review"
    store.set_settings(store.settings(ProjectSettings()).model_copy(update={"review": False}))
    assert "review_job" not in retrain(PROJECT)


def test_review_fields_and_tab():
    assert with_issue({"image": "a", "lsal_issue_rank": 3, "lsal_rank": 7}, {}) == {"image": "a", "lsal_rank": 7}
    view = view_data()
    assert view["title"] == VIEW_TITLE and view["ordering"] == ["tasks:data.lsal_issue_rank"]
    assert view["filters"]["items"][0]["filter"] == "filter:tasks:data.lsal_issue_rank"
    assert view["columnsDisplayType"]["tasks:data.lsal_issue_rank"] == "Number"
