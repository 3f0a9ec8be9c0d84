"""Stopping criteria in the running service: a spent budget stops retraining, the order stays live, and
`lsal status` and the admin API say which criterion fired and why."""

from __future__ import annotations

import time

DEFAULTS = {"strategy": {"name": "margin"}, "model": {"name": "logistic", "params": {"committee": 1}},
            "image_size": 16, "channels": 1, "retrain_every": 5, "min_labels": 10,
            "stopping": {"budget": 10}}


def test_a_spent_budget_stops_retraining_and_status_says_why(stack_factory, digit_images):
    stack = stack_factory(defaults=DEFAULTS)
    stack.create_project(digit_images.urls[:40])
    truth = dict(zip(digit_images.urls, digit_images.labels))
    stack.label_next(10, truth)
    status = stack.wait(lambda: (s := stack.status())["published"] and (s.get("stopping") or {}).get("fired")
                        and s, 120, "v1 published, the budget fired")
    stopping = status["stopping"]
    assert stopping["criterion"] == "budget" and "10 labels >= budget 10" in stopping["reason"], stopping
    live = status["published"]["model_version"]

    stack.label_next(10, truth)  # two retrain_every's worth of labels: nothing trains any more
    stack.wait(lambda: stack.status()["events"].get("ANNOTATION_CREATED", 0) >= 20, 30, "the webhooks")
    time.sleep(3)
    status = stack.status()
    assert [v["version"] for v in status["versions"]] == ["v1"], status["versions"]
    assert not status["queue"]["pending"] and not status["queue"]["running"], status["queue"]
    # an explicit retrain is refused by the job, with the reason; the live order is untouched
    job = stack.admin(f"{stack.project}/train", "POST")["job"]
    last = stack.wait(lambda: (r := stack.status()["last_retrain"]) and r.get("job") == job and r, 60,
                      "the stopped retrain")
    assert last["status"] == "stopped" and last["criterion"] == "budget", last
    assert stack.ls_model_version() == live and stack.status()["current_version"] == "v1"
    out = stack.lsal("status", "--project", str(stack.project))
    assert out.returncode == 0 and "stopping criterion fired (budget)" in out.stdout, out.stdout + out.stderr

    stack.admin(f"{stack.project}/settings", "PATCH", {"stopping": {"budget": 100}})  # raised: trains again
    stack.admin(f"{stack.project}/train", "POST")
    status = stack.wait(lambda: (s := stack.status())["current_version"] == "v2" and s, 120, "v2 after the raise")
    assert status["versions"][-1]["labeled"] == 20
    stack.wait(lambda: (s := stack.status()).get("stopping") and s["stopping"]["after"].startswith("publication")
               and s["published"]["version"] == "v2", 120, "v2 published and the rule evaluated")
    assert not stack.status()["stopping"]["fired"]
