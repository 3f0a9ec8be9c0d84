"""/webhook: events counted in Redis, retrains coalesced per project, bad input refused with 4xx."""

from __future__ import annotations

import json

from redis import Redis
from rq import Queue

from core.queueing import pending_job, release_pending
from core.store import ProjectStore


def _annotation(project: int, task: int = 1) -> dict:
    return {"action": "ANNOTATION_CREATED", "project": {"id": project}, "task": {"id": task},
            "annotation": {"id": task, "result": []}}


def test_every_n_changes_enqueue_one_retrain_and_a_storm_coalesces(client, auth, redis_url):
    redis = Redis.from_url(redis_url)
    queue = Queue("lsal", connection=redis)
    statuses = [client.post("/webhook", json=_annotation(7, i), headers=auth).json()["status"]
                for i in range(9)]
    assert statuses == ["recorded"] * 9 and queue.count == 0
    storm = [client.post("/webhook", json=_annotation(7, i), headers=auth).json() for i in range(9, 60)]
    assert storm[0]["status"] == "queued"
    assert {r["status"] for r in storm[1:]} == {"coalesced"}
    assert {r["job"] for r in storm} == {storm[0]["job"]}
    assert queue.count == 1 and queue.job_ids == [storm[0]["job"]]
    # a second project has its own pending job
    other = [client.post("/webhook", json=_annotation(8, i), headers=auth).json() for i in range(10)]
    assert other[-1]["status"] == "queued" and queue.count == 2
    assert ProjectStore(redis, 7).pending_changes() == 60


def test_after_the_job_starts_new_events_enqueue_the_next_one(client, auth, redis_url):
    redis = Redis.from_url(redis_url)
    first = [client.post("/webhook", json=_annotation(3, i), headers=auth).json() for i in range(10)][-1]
    assert release_pending(redis, 3, "retrain", first["job"])  # what the job does when it starts
    assert pending_job(redis, 3, "retrain") is None
    nxt = client.post("/webhook", json=_annotation(3, 99), headers=auth).json()
    assert nxt["status"] == "queued" and nxt["job"] != first["job"]


def test_a_pending_marker_whose_job_is_gone_is_replaced(client, auth, redis_url):
    redis = Redis.from_url(redis_url)
    redis.set("lsal:p:5:pending:retrain", "lsal-retrain-p5-lost")  # e.g. the queue was flushed
    out = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 5}}, headers=auth).json()
    assert out["status"] == "queued" and out["job"] != "lsal-retrain-p5-lost"
    assert Queue("lsal", connection=redis).job_ids == [out["job"]]


def test_start_training_enqueues_at_once_and_deletions_count(client, auth, redis_url):
    out = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 4}}, headers=auth).json()
    assert out["status"] == "queued"
    deleted = {"action": "ANNOTATIONS_DELETED", "project": {"id": 9}, "annotations": [{"id": i} for i in range(4)]}
    assert client.post("/webhook", json=deleted, headers=auth).json()["changes"] == 4


def test_other_label_studio_actions_are_acknowledged(client, auth):
    out = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 2}}, headers=auth)
    assert out.status_code == 200 and out.json()["status"] == "ignored"


def test_bad_webhooks_get_clear_4xx(client, auth):
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps([1, 2]).encode(), 400, "JSON object"),
        (json.dumps({"project": {"id": 1}}).encode(), 400, "unknown action"),
        (json.dumps({"action": "NUKE", "project": {"id": 1}}).encode(), 400, "unknown action"),
        (json.dumps({"action": "ANNOTATION_CREATED"}).encode(), 400, "project"),
        (json.dumps({"action": "ANNOTATION_CREATED", "project": {"id": -3}}).encode(), 400, "project"),
        (json.dumps({"action": "ANNOTATION_CREATED", "project": "abc"}).encode(), 400, "project"),
    ]
    for body, code, text in cases:
        response = client.post("/webhook", content=body, headers={**auth, "content-type": "application/json"})
        assert response.status_code == code, (body, response.text)
        assert text in response.json()["detail"]


def test_oversized_bodies_are_refused(settings_factory, auth):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    client = TestClient(create_app(settings_factory(max_body_bytes=1000)))
    response = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": 1, "pad": "x" * 5000},
                           headers=auth)
    assert response.status_code == 413


def test_redis_down_answers_503_so_label_studio_can_retry(settings_factory, auth):
    from fastapi.testclient import TestClient

    from backend.app import create_app

    client = TestClient(create_app(settings_factory(redis_url="redis://127.0.0.1:9/0")))
    response = client.post("/webhook", json=_annotation(1), headers=auth)
    assert response.status_code == 503 and "Redis unavailable" in response.json()["detail"]


def test_the_webhook_of_a_confident_pre_label_the_worker_saved_is_not_a_change(client, auth, redis_url):
    from core.labeled_set import auto_result

    region = {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["3"]}}
    for i in range(12):
        event = {**_annotation(41, i), "annotation": {"id": i, "result": auto_result([region], "3", "v1")}}
        answer = client.post("/webhook", json=event, headers=auth).json()
        assert answer["status"] == "ignored" and "confident pre-label" in answer["reason"]
    store = ProjectStore(Redis.from_url(redis_url), 41)
    assert store.pending_changes() == 0 and store.events()["ANNOTATION_CREATED"] == 12
    human = client.post("/webhook", json=_annotation(41, 99), headers=auth).json()
    assert human["status"] == "recorded" and store.pending_changes() == 1
