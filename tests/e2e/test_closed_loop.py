"""The product, end to end: a real Label Studio, our backend and a real RQ worker, driven like an annotator.

Label Studio (own venv, temp SQLite data dir), Redis (private), `lsal serve` and `lsal worker` run as
separate processes on 127.0.0.1 (fixtures in conftest.py). The tests label tasks through Label Studio's
REST API and check that the webhook produced one coalesced retrain, that a model version appeared, that
every unlabeled task got a prediction of the live version, that Label Studio's /next serves the task our
strategy ranked first (checked against the strategy run directly on the same model), that switching strategy
changes the order, that "Start Training" retrains, that new tasks join the order, and that lost events are
caught up by reconciliation.
"""

from __future__ import annotations

import time

from stack.settings import FAST_SETTINGS as FAST


def _finished_jobs(stack, prefix: str) -> list[str]:
    from redis import Redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    q = Queue("lsal", connection=Redis.from_url(stack.env["REDIS_URL"]))
    return [j for j in FinishedJobRegistry(queue=q).get_job_ids() if j.startswith(prefix)]


def test_closed_loop_through_label_studio(stack_factory, digit_images):
    stack = stack_factory()
    tasks = stack.create_project(digit_images.urls)
    project, ls = stack.project, stack.ls
    truth = dict(zip(digit_images.urls, digit_images.labels))
    images = dict(zip(digit_images.urls, digit_images.paths))
    assert len(tasks) == len(digit_images.urls)
    hooks = [h for h in stack.ok(ls.get(f"/api/webhooks/?project={project}"), "webhooks")
             if h["url"].startswith(stack.url)]
    assert len(hooks) == 1 and not hooks[0]["send_for_all_actions"], hooks  # Label Studio's own, narrowed

    doctor = stack.lsal("doctor")
    assert doctor.returncode == 0 and "admin@example.com" in doctor.stdout, doctor.stdout + doctor.stderr
    bad = stack.lsal("doctor", LABEL_STUDIO_API_KEY="0" * 40)
    assert bad.returncode == 1 and "token is wrong" in bad.stdout, bad.stdout

    # an annotator labels 10 tasks in Label Studio's order: exactly one retrain, then a published order
    labeled = set(stack.label_next(10, truth))
    status = stack.wait(lambda: (s := stack.status())["published"] and s, 120, "the first publication")
    assert status["events"].get("ANNOTATION_CREATED") == 10
    assert [v["version"] for v in status["versions"]] == ["v1"] and status["versions"][0]["labeled"] == 10
    assert len(_finished_jobs(stack, f"lsal-retrain-p{project}-")) == 1

    live = status["published"]["model_version"]
    assert stack.ls_model_version() == live
    assert stack.prediction_counts().get(live) == len(tasks) - len(labeled)

    expected = stack.direct_order("v1", FAST, tasks, labeled, images)
    assert [r["task"] for r in stack.admin(f"{project}/ranking?limit=20")["head"]] == expected[:20]
    assert stack.next_task()["id"] == expected[0]

    # the admin switches the strategy (CLI, --now): the next order is the new strategy's
    out = stack.lsal("strategy", "set", "--project", str(project), "random", "--seed", "3", "--now")
    assert out.returncode == 0, out.stdout + out.stderr
    status = stack.wait(lambda: (s := stack.status())["published"]["model_version"] != live and s, 120,
                        "the rescore with the new strategy")
    assert status["published"]["strategy"]["name"] == "random"
    expected_random = stack.direct_order("v1", {**FAST, "strategy": {"name": "random", "params": {"seed": 3}}}, tasks,
                                         labeled, images)
    assert expected_random[:20] != expected[:20]
    assert stack.next_task()["id"] == expected_random[0]
    old, live = live, status["published"]["model_version"]
    assert stack.ls_model_version() == live
    assert old in stack.prediction_counts()  # kept for rollback

    # "Start Training" in Label Studio retrains (v2) and republishes
    stack.ok(ls.post(f"/api/ml/{stack.ml['id']}/train", json={}), "start training")
    status = stack.wait(lambda: (s := stack.status())["current_version"] == "v2" and
                        s["published"]["version"] == "v2" and s, 120, "Start Training to publish v2")
    assert status["events"].get("START_TRAINING") == 1
    assert (stack.model_dir / f"project-{project}" / "learning_curve.png").read_bytes().startswith(b"\x89PNG")
    live = status["published"]["model_version"]
    assert stack.ls_model_version() == live

    # stream mode: newly imported tasks join the live order at once, without waiting for a retrain
    stack.ok(ls.post(f"/api/projects/{project}/import", json=[{"image": u} for u in digit_images.urls[:5]]),
             "import more tasks")
    status = stack.wait(lambda: (s := stack.status()).get("last_score_new") and s, 60, "the new tasks' scores")
    assert status["last_score_new"]["status"] == "scored" and status["last_score_new"]["tasks"] == 5
    assert stack.prediction_counts()[live] == len(tasks) + 5 - len(labeled)
    assert status["published"]["model_version"] == live  # no new publication was needed


def test_without_a_token_the_backend_uses_the_one_setup_delivers(stack_factory, digit_images):
    stack = stack_factory(with_token=False)
    stack.create_project(digit_images.urls[:60], title="no token")
    truth = dict(zip(digit_images.urls, digit_images.labels))
    stack.label_next(10, truth)
    status = stack.wait(lambda: (s := stack.status())["published"] and s, 120, "a publication")
    assert stack.ls_model_version() == status["published"]["model_version"]
    assert stack.ls.token not in str(status)  # the delivered token stays out of status

    # events lost (webhook off, as when Label Studio's 1 s delivery times out): reconciliation catches up
    for hook in stack.ok(stack.ls.get(f"/api/webhooks/?project={stack.project}"), "webhooks"):
        stack.ok(stack.ls.patch(f"/api/webhooks/{hook['id']}/", json={"is_active": False}), "disable the webhook")
    stack.label_next(10, truth)
    time.sleep(2)
    assert stack.status()["current_version"] == "v1"  # no event reached us
    out = stack.lsal("reconcile", "--project", str(stack.project))
    assert out.returncode == 0 and "20 annotated tasks" in out.stdout and "retrain queued" in out.stdout, out.stdout
    status = stack.wait(lambda: (s := stack.status())["published"]["version"] == "v2" and s, 120,
                        "the reconciled retrain to publish")
    assert status["versions"][-1]["labeled"] == 20
