"""The promotion gate through a real Label Studio: a retrain that measures clearly worse on the held-out
tasks is not served and the order Label Studio serves does not change; the admin can serve it anyway.

The bad candidate is made the way it happens: a batch of wrong labels. The test relabels every training-side
task (the held-out side is in Redis) with the next class, so the candidate learns a shifted mapping while the
held-out tasks keep their true labels.
"""

from __future__ import annotations

import json

from stack.settings import fast_settings

DEFAULTS = fast_settings(retrain_every=100_000, holdout_fraction=0.3)
LABELED = 120


def test_a_clearly_worse_retrain_is_held_back_and_the_live_order_stays(stack_factory, digit_images):
    stack = stack_factory(defaults=DEFAULTS)
    tasks = stack.create_project(digit_images.urls)
    truth = dict(zip(digit_images.urls, digit_images.labels))
    ids = sorted(tasks)[:LABELED]
    annotations = {t: stack.label({"id": t}, truth[tasks[t]]) for t in ids}
    stack.wait(lambda: stack.status()["events"].get("ANNOTATION_CREATED", 0) >= LABELED, 60, "the webhooks")
    stack.admin(f"{stack.project}/train", "POST")
    status = stack.wait(lambda: (s := stack.status())["versions"] and s["versions"][-1]["labeled"] == LABELED and
                        s["published"] and s["published"]["version"] == s["versions"][-1]["version"] and s, 180,
                        "the version trained on every label, published")
    good = status["current_version"]
    record = status["versions"][-1]
    assert record["promoted"] and record["promotion"]["reason"].startswith("promoted"), record["promotion"]
    live = status["published"]["model_version"]
    top = status["published"]["top"]

    # a batch of wrong labels on the training side only
    sides = json.loads(stack.redis().get(f"lsal:p:{stack.project}:holdout"))["sides"]
    train_side = [t for t in ids if not sides[str(t)]]
    assert len(train_side) < LABELED
    for task in train_side:
        shifted = str((int(truth[tasks[task]]) + 1) % 10)
        stack.ok(stack.ls.patch(f"/api/annotations/{annotations[task]['id']}/",
                                json={"result": stack.interface.result(shifted)}), "relabel")
    stack.admin(f"{stack.project}/train", "POST")
    status = stack.wait(lambda: (s := stack.status())["last_retrain"] and s["last_retrain"]["status"] == "held_back"
                        and s, 180, "the held-back retrain")
    candidate = status["versions"][-1]
    assert candidate["version"] != good and candidate["promoted"] is False
    verdict = candidate["promotion"]
    assert verdict["against"] == good and verdict["candidate"] < verdict["serving"] and verdict["upper"] < 0
    assert verdict["items"] == sum(1 for t in ids if sides[str(t)])  # the same held-out tasks for both
    assert verdict["reason"].startswith("held back: worse beyond noise")
    assert status["current_version"] == good
    assert status["published"]["model_version"] == live and stack.ls_model_version() == live
    assert status["published"]["top"] == top and stack.next_task()["id"] == top[0]
    assert not status["queue"]["pending"]  # no rescore was queued for the held-back version
    out = stack.lsal("versions", "--project", str(stack.project))
    text = " ".join(out.stdout.split())
    assert out.returncode == 0 and f"{candidate['version']} held back: worse beyond noise" in text, out.stdout

    # the admin serves it anyway (rollback serves any recorded version): the order follows it
    assert stack.lsal("rollback", "--project", str(stack.project), candidate["version"]).returncode == 0
    stack.wait(lambda: (s := stack.status())["published"]["version"] == candidate["version"] and s, 120,
               "the forced version's publication")
