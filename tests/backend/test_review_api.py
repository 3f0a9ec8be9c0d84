"""GET /admin/projects/{id}/review: the newest label-noise review, flagged tasks first, behind the secret."""

from __future__ import annotations

from redis import Redis

from core.store import ProjectStore


def test_review_route_lists_flagged_tasks_and_needs_the_secret(client, auth, redis_url, review_record):
    assert client.get("/admin/projects/4/review").status_code == 401
    empty = client.get("/admin/projects/4/review", headers=auth).json()
    assert empty["review"] is None and "after each retrain" in empty["reason"]
    ProjectStore(Redis.from_url(redis_url), 4).set_review(review_record)
    got = client.get("/admin/projects/4/review", headers=auth).json()
    assert got["review"]["flagged"] == 2 and "items" not in got["review"] and got["total"] == 2
    assert [i["task"] for i in got["items"]] == [11, 12]
    assert got["items"][0] == review_record["items"][0]
    every = client.get("/admin/projects/4/review?all_tasks=true&limit=2", headers=auth).json()
    assert [i["task"] for i in every["items"]] == [11, 12] and every["total"] == 3
    assert client.get("/admin/projects/4/review?limit=0", headers=auth).status_code == 422
    status = client.get("/admin/projects/4/status", headers=auth).json()
    assert status["review"]["flagged"] == 2 and status["review"]["version"] == "v3"
