"""The admin HTTP API: settings validated (the old ones stay on error), params routed, versions, rollback."""

from __future__ import annotations

from redis import Redis
from rq import Queue

from core.store import ProjectStore


def test_settings_default_from_the_environment_and_patch_validates(client, auth, redis_url):
    got = client.get("/admin/projects/3/settings", headers=auth).json()
    assert got["strategy"]["name"] == "badge" and got["retrain_every"] == 10
    ok = client.patch("/admin/projects/3/settings", json={"retrain_every": 5, "batch_size": 20}, headers=auth)
    assert ok.status_code == 200 and ok.json()["retrain_every"] == 5
    for bad, text in [({"retrain_every": 0}, "retrain_every"), ({"strategy": {"name": "nope"}}, "available"),
                      ({"batch_size": "many"}, "batch_size"), ({"colour": "red"}, "colour"),
                      ({"model": {"name": "cnn", "params": {"mc_samples": 0}}}, "mc_samples")]:
        response = client.patch("/admin/projects/3/settings", json=bad, headers=auth)
        assert response.status_code == 422 and text in response.json()["detail"], (bad, response.text)
    assert client.get("/admin/projects/3/settings", headers=auth).json()["retrain_every"] == 5  # still in force


def test_strategy_switch_routes_params_and_can_rescore_now(client, auth, redis_url):
    out = client.post("/admin/projects/7/strategy", json={"name": "bald", "params": {"mc_samples": 20}},
                      headers=auth)
    assert out.status_code == 200, out.text
    settings = out.json()["settings"]
    assert settings["strategy"] == {"name": "bald", "params": {}}
    assert settings["model"]["params"]["mc_samples"] == 20  # BALD has no mc_samples; the cnn model does
    out = client.post("/admin/projects/7/strategy", json={"name": "badge", "params": {"batch_size": 25},
                                                          "now": True}, headers=auth).json()
    assert out["settings"]["strategy"]["params"] == {"batch_size": 25}
    assert Queue("lsal", connection=Redis.from_url(redis_url)).job_ids == [out["job"]]


def test_bad_strategy_settings_are_refused_with_what_is_allowed(client, auth):
    client.post("/admin/projects/2/strategy", json={"name": "margin"}, headers=auth)
    cases = [({"name": "nope"}, "available: alfamix"), ({"name": "badge", "params": {"batch_size": -1}}, "batch_size"),
             ({"name": "bald", "params": {"k": 3}}, "allowed: strategy:"),
             ({"name": "margin", "params": {"mc_samples": 0}}, "mc_samples")]
    for body, text in cases:
        response = client.post("/admin/projects/2/strategy", json=body, headers=auth)
        assert response.status_code == 422 and text in response.json()["detail"], (body, response.text)
    assert client.get("/admin/projects/2/settings", headers=auth).json()["strategy"]["name"] == "margin"
    assert client.post("/admin/projects/2/strategy", json={"nam": "x"}, headers=auth).status_code == 422


def test_versions_rollback_and_status(client, auth, redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 4)
    for n in (1, 2):
        store.add_version({"version": store.next_version(), "labeled": 10 * n, "metrics": {"holdout_accuracy": .5}})
    assert client.get("/admin/projects/4/versions", headers=auth).json()["current"] == "v2"
    missing = client.post("/admin/projects/4/rollback", json={"version": "v9"}, headers=auth)
    assert missing.status_code == 404 and "v1, v2" in missing.json()["detail"]
    back = client.post("/admin/projects/4/rollback", json={"version": "v1"}, headers=auth).json()
    assert back["current"] == "v1" and store.current_version() == "v1"
    status = client.get("/admin/projects/4/status", headers=auth).json()
    assert status["current_version"] == "v1" and [v["version"] for v in status["versions"]] == ["v1", "v2"]
    assert status["queue"]["pending"] == {"rescore": back["job"]}
    assert client.get("/admin/projects/4/ranking?limit=0", headers=auth).status_code == 422
    names = [s["name"] for s in client.get("/admin/strategies", headers=auth).json()]
    assert "badge" in names and "bald" in names


def test_metrics_expose_requests_and_webhook_events(client, auth):
    client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}}, headers=auth)
    text = client.get("/metrics").text
    assert 'lsal_webhook_events_total{action="PROJECT_UPDATED"} 1.0' in text
    assert "lsal_http_request_seconds_bucket" in text and "lsal_queue_depth" in text


def test_learning_curve_png_per_project(client, auth, redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 6)
    empty = client.get("/admin/projects/6/learning-curve.png", headers=auth)
    assert empty.status_code == 200 and empty.content.startswith(b"\x89PNG")
    for n, acc in ((10, 0.4), (20, 0.6), (30, 0.7)):
        store.add_version({"version": store.next_version(), "labeled": n,
                           "metrics": {"holdout_accuracy": acc, "holdout_macro_f1": acc - 0.05}})
    png = client.get("/admin/projects/6/learning-curve.png", headers=auth)
    assert png.headers["content-type"] == "image/png" and len(png.content) > len(empty.content) // 2
    assert client.get("/admin/projects/6/learning-curve.png").status_code == 401
    assert "lsal_failed_jobs 0.0" in client.get("/metrics").text
