"""A job that loses its project lock mid-training stops: no version, no publication, the live order kept."""

from __future__ import annotations

from core.queueing import lock_key

SLOW_CNN = {"name": "cnn", "params": {"mc_samples": 2, "train": {"epochs": 10000, "min_epoch_items": 4096}}}
DEFAULTS = {"strategy": {"name": "margin"}, "model": {"name": "logistic", "params": {"committee": 1}},
            "image_size": 16, "channels": 1, "retrain_every": 10, "min_labels": 10}


def test_a_retrain_whose_lock_another_job_took_stops_before_it_writes_a_version_or_publishes(stack_factory,
                                                                                          digit_images):
    stack = stack_factory(defaults=DEFAULTS, LSAL_LOCK_LEASE_S="3")  # the heartbeat renews every second
    stack.create_project(digit_images.urls[:60])
    stack.label_next(10, dict(zip(digit_images.urls, digit_images.labels)))
    stack.wait(lambda: stack.status()["published"], 120, "v1 to publish")
    before = stack.status()
    live = before["published"]["model_version"]
    stack.admin(f"{stack.project}/settings", "PATCH", {"model": SLOW_CNN})
    job = stack.admin(f"{stack.project}/train", "POST")["job"]
    stack.wait(lambda: any(j["id"] == job and str(j.get("phase", "")).startswith("train")
                           for j in stack.status()["queue"]["running"]), 120, "training to start")
    redis = stack.redis()
    redis.set(lock_key(stack.project), b"another-job", ex=120)  # its lease lapsed and another job holds it
    last = stack.wait(lambda: (r := stack.status()["last_retrain"]) and r.get("job") == job and
                      r.get("status") == "failed" and r, 60, "the retrain to stop", fail_fast=False)
    assert last["error"].startswith("LockLostError"), last
    assert "lost its lock" in stack.worker.log_tail(10**6)
    after = stack.status()
    assert [v["version"] for v in after["versions"]] == [v["version"] for v in before["versions"]] == ["v1"]
    assert after["current_version"] == "v1" and after["published"]["model_version"] == live
    assert stack.ls_model_version() == live and set(stack.prediction_counts()) == {live}
    assert redis.get(lock_key(stack.project)) == b"another-job"  # the lock it lost was not released by it
    files = sorted(p.name for p in (stack.model_dir / f"project-{stack.project}").glob("v*"))
    assert files == ["v1.pt"]
