"""The product, end to end: a real Label Studio, our backend and a real RQ worker, driven like an annotator.

Label Studio (own venv, temp SQLite data dir), Redis (private), `lsal serve` and `lsal worker` run as
separate processes on 127.0.0.1. The test labels tasks through Label Studio's REST API and checks that the
webhook produced one coalesced retrain, that a model version appeared, that every unlabeled task got a
prediction of the live version, that Label Studio's /next serves the task our strategy ranked first (checked
against the strategy run directly on the same model), that switching strategy changes the order, and that
"Start Training" retrains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.project_settings import ProjectSettings
from backend.stack import ManagedProcess, free_port, lsal_command
from plugins.images import decode_image, resize
from plugins.models.artifact import load_artifact
from plugins.strategies import Input

SECRET = "e2e-secret-0123456789"
CHOICES = "".join(f'<Choice value="{d}"/>' for d in range(10))
CONFIG = f'<View><Image name="image" value="$image"/><Choices name="label" toName="image">{CHOICES}</Choices></View>'
DEFAULTS = {"strategy": {"name": "margin"}, "model": {"name": "logistic", "params": {"committee": 1}},
            "image_size": 8, "channels": 1, "retrain_every": 10, "min_labels": 10, "holdout_fraction": 0.2}


def _start_stack(label_studio, redis_url, digit_images, tmp_path, with_token: bool = True):
    """`lsal serve` and `lsal worker` for the test's Label Studio and Redis; stopped by PID afterwards."""
    port = free_port()
    env = {"LABEL_STUDIO_URL": label_studio.url, "REDIS_URL": redis_url, "LSAL_SECRET": SECRET,
           "MODEL_DIR": str(tmp_path / "models"), "LSAL_IMAGE_HOSTS": digit_images.base_url.split("//", 1)[1],
           "LSAL_DEFAULTS": json.dumps(DEFAULTS), "OMP_NUM_THREADS": "1"}
    if with_token:
        env["LABEL_STUDIO_API_KEY"] = label_studio.token
    backend = ManagedProcess("backend", lsal_command("serve", "--host", "127.0.0.1", "--port", str(port),
                                                     "--log-level", "warning"), tmp_path / "backend.log",
                             env).start()
    worker = ManagedProcess("worker", lsal_command("worker", "--class", "simple"), tmp_path / "worker.log",
                            env).start()
    try:
        backend.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        yield type("Stack", (), {"url": f"http://127.0.0.1:{port}", "env": env, "backend": backend,
                                 "worker": worker, "model_dir": tmp_path / "models"})
    finally:
        worker.stop()
        backend.stop()
        for proc in (backend, worker):
            assert SECRET not in proc.log_tail(10**7), f"the secret leaked into the {proc.name} log"
            assert label_studio.token not in proc.log_tail(10**7), f"the token leaked into the {proc.name} log"


@pytest.fixture
def stack(label_studio, redis_url, digit_images, tmp_path):
    """Backend and worker with LABEL_STUDIO_API_KEY in their environment."""
    yield from _start_stack(label_studio, redis_url, digit_images, tmp_path)


@pytest.fixture
def stack_without_token(label_studio, redis_url, digit_images, tmp_path):
    """Backend and worker with no token: they use the one Label Studio sends with /setup."""
    yield from _start_stack(label_studio, redis_url, digit_images, tmp_path, with_token=False)


def _ok(response, what: str):
    assert 200 <= response.status < 300, f"{what}: HTTP {response.status} {response.text[:500]}"
    return response.json()


def _admin(stack, path: str) -> dict:
    import httpx

    r = httpx.get(f"{stack.url}/admin/projects/{path}", headers={"X-LSAL-Secret": SECRET}, timeout=10)
    r.raise_for_status()
    return r.json()


def _wait(predicate, timeout: float, what: str, stack=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack is not None and any((_admin(stack, f"{stack.project}/status").get(k) or {}).get("status") ==
                                     "failed" for k in ("last_retrain", "last_rescore", "last_score_new")):
            break  # a job failed (it will be retried later): report it now instead of waiting out the timeout
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    logs = "" if stack is None else f"\nstatus: {_status_or_error(stack)}\nworker log:\n{stack.worker.log_tail()}\nbackend log:\n{stack.backend.log_tail()}"
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{logs}")


def _status_or_error(stack) -> str:
    try:
        return json.dumps({k: v for k, v in _admin(stack, f"{stack.project}/status").items()
                           if k not in ("settings",)}, default=str)[:3000]
    except Exception as exc:  # noqa: BLE001 (diagnostics only)
        return repr(exc)


def _label(ls, task: dict, label: str) -> None:
    result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
    _ok(ls.post(f"/api/tasks/{task['id']}/annotations/", json={"result": result, "lead_time": 1.0}),
        f"annotate task {task['id']}")


def _next(ls, project: int) -> dict:
    return _ok(ls.get(f"/api/projects/{project}/next"), "next task")


def _direct_order(stack, project: int, version: str, strategy: dict, tasks: dict[int, str], labeled: set[int],
                  images: dict[str, Path]) -> list[int]:
    """Unlabeled task ids in the order the strategy gives when run directly on the artifact (no service)."""
    artifact = load_artifact(stack.model_dir / f"project-{project}" / f"{version}.pt")
    settings = ProjectSettings.model_validate({**DEFAULTS, "strategy": strategy})
    pool = sorted(t for t in tasks if t not in labeled)
    x = np.stack([resize(decode_image(images[tasks[t]].read_bytes(), mode="L"), (8, 8))[..., None] for t in pool])
    strat = settings.build_strategy()
    needs = strat.required_inputs() | (strat.optional_inputs() & artifact.model.provides) | {Input.PROBS}
    inputs = artifact.model.pool_inputs(x, frozenset(needs), x[:0], np.zeros(0, dtype=np.int64))
    return [pool[i] for i in strat.rank(inputs).order]


def test_closed_loop_through_label_studio(label_studio, stack, digit_images):
    ls = label_studio
    project = _ok(ls.post("/api/projects/", json={"title": "e2e digits", "label_config": CONFIG}), "project")["id"]
    _ok(ls.post(f"/api/projects/{project}/import", json=[{"image": u} for u in digit_images.urls]), "import")
    tasks = {t["id"]: t["data"]["image"] for t in _ok(ls.get(f"/api/tasks?project={project}&page_size=500"),
                                                       "tasks")["tasks"]}
    stack.project = project
    truth = dict(zip(digit_images.urls, digit_images.labels))
    images = dict(zip(digit_images.urls, digit_images.paths))
    assert len(tasks) == len(digit_images.urls)

    # connect the backend as an admin does in Settings -> Model (basic auth = the secret, for Start Training)
    ml = _ok(ls.post("/api/ml", json={"project": project, "url": stack.url, "title": "lsal",
                                      "auth_method": "BASIC_AUTH", "basic_auth_user": "lsal",
                                      "basic_auth_pass": SECRET}), "connect the ML backend")
    _wait(lambda: _admin(stack, f"{project}/status")["webhook_url"] == f"{stack.url}/webhook", 60,
          "the backend to register its webhook", stack)
    hooks = [h for h in _ok(ls.get(f"/api/webhooks/?project={project}"), "webhooks") if h["url"].startswith(stack.url)]
    assert len(hooks) == 1 and not hooks[0]["send_for_all_actions"], hooks

    doctor = subprocess.run(lsal_command("doctor"), env={**os.environ, **stack.env}, capture_output=True,
                            text=True, timeout=120)
    assert doctor.returncode == 0 and "admin@example.com" in doctor.stdout, doctor.stdout + doctor.stderr
    bad = subprocess.run(lsal_command("doctor"), env={**os.environ, **stack.env, "LABEL_STUDIO_API_KEY": "0" * 40},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "token is wrong" in bad.stdout, bad.stdout

    # an annotator labels 10 tasks in Label Studio's order: exactly one retrain, then a published order
    labeled: set[int] = set()
    for _ in range(10):
        task = _next(ls, project)
        _label(ls, task, truth[task["data"]["image"]])
        labeled.add(task["id"])
    status = _wait(lambda: (s := _admin(stack, f"{project}/status"))["published"] and s, 120,
                   "the first retrain + rescore to publish", stack)
    assert status["events"].get("ANNOTATION_CREATED") == 10
    assert [v["version"] for v in status["versions"]] == ["v1"]
    assert status["versions"][0]["labeled"] == 10
    retrains = [j for j in _finished_jobs(stack) if j.startswith(f"lsal-retrain-p{project}-")]
    assert len(retrains) == 1, retrains

    live = status["published"]["model_version"]
    assert _ok(ls.get(f"/api/projects/{project}"), "project")["model_version"] == live
    versions = _ok(ls.get(f"/api/projects/{project}/model-versions/"), "model versions")
    counts = versions if isinstance(versions, dict) else {v["model_version"]: v["count"] for v in versions}
    assert counts.get(live) == len(tasks) - len(labeled), counts

    expected = _direct_order(stack, project, "v1", DEFAULTS["strategy"], tasks, labeled, images)
    published_head = [r["task"] for r in _admin(stack, f"{project}/ranking?limit=20")["head"]]
    assert published_head == expected[:20]
    assert _next(ls, project)["id"] == expected[0]

    # the admin switches the strategy (CLI, --now): the next order is the new strategy's
    out = subprocess.run(lsal_command("strategy", "set", "--project", str(project), "random", "--seed", "3",
                                      "--now"), env={**os.environ, **stack.env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    status = _wait(lambda: (s := _admin(stack, f"{project}/status"))["published"]["model_version"] != live and s,
                   120, "the rescore with the new strategy", stack)
    assert status["published"]["strategy"]["name"] == "random"
    expected_random = _direct_order(stack, project, "v1", {"name": "random", "params": {"seed": 3}}, tasks,
                                    labeled, images)
    assert expected_random[:20] != expected[:20]
    assert _next(ls, project)["id"] == expected_random[0]
    old = live
    live = status["published"]["model_version"]
    assert _ok(ls.get(f"/api/projects/{project}"), "project")["model_version"] == live
    assert old in _ok(ls.get(f"/api/projects/{project}/model-versions/"), "versions")  # kept for rollback

    # "Start Training" in Label Studio retrains (v2) and republishes
    _ok(ls.post(f"/api/ml/{ml['id']}/train", json={}), "start training")
    status = _wait(lambda: (s := _admin(stack, f"{project}/status"))["current_version"] == "v2" and
                   s["published"]["version"] == "v2" and s, 120, "Start Training to publish v2", stack)
    assert status["events"].get("START_TRAINING") == 1
    live = status["published"]["model_version"]
    assert _ok(ls.get(f"/api/projects/{project}"), "project")["model_version"] == live

    # stream mode: newly imported tasks join the live order at once, without waiting for a retrain
    extra = [{"image": u} for u in digit_images.urls[:5]]
    _ok(ls.post(f"/api/projects/{project}/import", json=extra), "import more tasks")
    status = _wait(lambda: (s := _admin(stack, f"{project}/status")).get("last_score_new") and s, 60,
                   "the new tasks to be scored", stack)
    assert status["last_score_new"]["status"] == "scored" and status["last_score_new"]["tasks"] == 5
    counts = _ok(ls.get(f"/api/projects/{project}/model-versions/"), "model versions")
    unlabeled = len(tasks) + 5 - len(labeled)
    assert counts[live] == unlabeled, counts
    assert status["published"]["model_version"] == live  # no new publication was needed


def _finished_jobs(stack) -> list[str]:
    from redis import Redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    q = Queue("lsal", connection=Redis.from_url(stack.env["REDIS_URL"]))
    return FinishedJobRegistry(queue=q).get_job_ids()


def test_without_a_token_the_backend_uses_the_one_setup_delivers(label_studio, stack_without_token,
                                                                   digit_images):
    ls, stack = label_studio, stack_without_token
    project = _ok(ls.post("/api/projects/", json={"title": "no token", "label_config": CONFIG}), "project")["id"]
    stack.project = project
    _ok(ls.post(f"/api/projects/{project}/import", json=[{"image": u} for u in digit_images.urls[:60]]), "import")
    truth = dict(zip(digit_images.urls, digit_images.labels))
    _ok(ls.post("/api/ml", json={"project": project, "url": stack.url, "title": "lsal", "auth_method": "BASIC_AUTH",
                                 "basic_auth_user": "lsal", "basic_auth_pass": SECRET}), "connect")
    _wait(lambda: _admin(stack, f"{project}/status")["webhook_url"], 60, "the webhook registration", stack)
    for _ in range(10):
        task = _next(ls, project)
        _label(ls, task, truth[task["data"]["image"]])
    status = _wait(lambda: (s := _admin(stack, f"{project}/status"))["published"] and s, 120, "a publication",
                   stack)
    assert _ok(ls.get(f"/api/projects/{project}"), "project")["model_version"] == status["published"]["model_version"]
    assert ls.token not in json.dumps(status)  # the delivered token stays out of status

    # events lost (webhook off, as when Label Studio's 1 s delivery times out): reconciliation catches up
    for hook in _ok(ls.get(f"/api/webhooks/?project={project}"), "webhooks"):
        _ok(ls.patch(f"/api/webhooks/{hook['id']}/", json={"is_active": False}), "disable the webhook")
    for _ in range(10):
        task = _next(ls, project)
        _label(ls, task, truth[task["data"]["image"]])
    time.sleep(2)
    assert _admin(stack, f"{project}/status")["current_version"] == "v1"  # no event reached us
    out = subprocess.run(lsal_command("reconcile", "--project", str(project)), env={**os.environ, **stack.env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "20 annotated tasks" in out.stdout and "retrain queued" in out.stdout, out.stdout
    status = _wait(lambda: (s := _admin(stack, f"{project}/status"))["published"]["version"] == "v2" and s, 120,
                   "the reconciled retrain to publish", stack)
    assert status["versions"][-1]["labeled"] == 20
