"""Security against a real Label Studio (issue 20): nobody unauthenticated decides where the worker sends
webhooks or which Label Studio and token it trusts, a project is known only once Label Studio confirms it,
the worker's webhooks work in every auth mode, and Label Studio never holds LSAL_SECRET."""

from __future__ import annotations

import json
import re

import httpx
from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry

from core.tokens import WEBHOOK_TOKEN_HEADER, webhook_token
from core.credentials import credentials_key
from stack.annotator import DIGITS_LABEL_CONFIG as CONFIG


def _idle(stack, timeout: float = 60) -> None:
    """Wait until the stack's queue is empty and no job runs."""
    queue = Queue("lsal", connection=Redis.from_url(stack.env["REDIS_URL"]))
    stack.wait(lambda: queue.count == 0 and not StartedJobRegistry(queue=queue).get_job_ids(), timeout,
               "an idle queue")


def _webhooks(stack) -> list[dict]:
    return stack.ok(stack.ls.get(f"/api/webhooks/?project={stack.project}"), "webhooks")


def _projects(stack) -> list[int]:
    return httpx.get(f"{stack.url}/admin/projects", headers={"X-LSAL-Secret": stack.env["LSAL_SECRET"]},
                     timeout=10).json()


def _setup(stack, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/setup", json=body, headers=headers, timeout=30)


def test_a_forged_host_at_setup_never_decides_where_the_webhook_goes(stack_factory, digit_images):
    stack = stack_factory()
    stack.create_project(digit_images.urls[:20], title="forged host")
    project = stack.project
    before = _webhooks(stack)
    assert [h["url"] for h in before if h["url"].startswith(stack.url)] == [f"{stack.url}/webhook"]
    for hook in before:  # the project's token, never the secret, is what Label Studio holds
        assert stack.env["LSAL_SECRET"] not in json.dumps(hook), hook
    ours = [h for h in before if h["url"] == f"{stack.url}/webhook"][0]
    assert ours["headers"] == {WEBHOOK_TOKEN_HEADER: webhook_token(stack.env["LSAL_SECRET"], project)}

    # an unauthenticated caller's /setup for the (existing) project, claiming to be another host
    forged = _setup(stack, {"project": f"{project}.1", "schema": CONFIG, "hostname": "http://attacker.example:9"},
                    Host="attacker.example:9999")
    assert forged.status_code == 200, forged.text  # Label Studio confirms the project: the answer is normal
    stack.redis().delete(f"lsal:p:{project}:info")  # even with no webhook on record, a re-registration ...
    assert _setup(stack, {"project": project, "schema": CONFIG}, Host="attacker.example:9999").status_code == 200
    stack.wait(lambda: stack.status()["webhook_url"], 60, "the webhook to be registered again")
    _idle(stack)
    after = _webhooks(stack)
    assert not [h for h in after if "attacker" in h["url"]], after  # ... goes where Label Studio has the model
    assert stack.status()["webhook_url"] == f"{stack.url}/webhook"


def test_projects_label_studio_does_not_confirm_are_never_known(stack_factory, digit_images):
    stack = stack_factory()
    stack.create_project(digit_images.urls[:10], title="known")
    known = _projects(stack)
    hooks = len(_webhooks(stack))
    codes = [_setup(stack, {"project": 90_000 + i, "schema": CONFIG}).status_code for i in range(40)]
    assert set(codes) <= {404, 429} and codes[0] == 404, codes
    assert _projects(stack) == known == [stack.project]
    _idle(stack)
    assert len(_webhooks(stack)) == hooks
    metrics = httpx.get(f"{stack.url}/metrics", timeout=10)
    # no label of a refused project id (a float such as 0.00983149000057 may hold the digits)
    assert metrics.status_code == 200 and not re.search(r'"9\d{4}"', metrics.text), metrics.text


def test_without_an_api_key_setup_keeps_only_a_token_that_works_against_label_studio_url(stack_factory,
                                                                                         digit_images):
    stack = stack_factory(with_token=False)
    stack.create_project(digit_images.urls[:20], title="delivered token")  # Label Studio's /setup delivers it
    redis = stack.redis()
    stored = json.loads(redis.get(credentials_key(stack.project)))
    assert stored == {"token": stack.ls.token}  # no hostname: Label Studio is always LABEL_STUDIO_URL

    # a caller with a made-up token and another Label Studio: refused, nothing replaced
    bogus = _setup(stack, {"project": stack.project, "schema": CONFIG, "hostname": "http://attacker.example:9",
                           "access_token": "f" * 40})
    assert bogus.status_code == 403 and "LABEL_STUDIO_URL" in bogus.json()["detail"], bogus.text
    assert json.loads(redis.get(credentials_key(stack.project))) == stored
    # a working token with another hostname: the token is kept, the hostname ignored
    again = _setup(stack, {"project": stack.project, "schema": CONFIG, "hostname": "http://attacker.example:9",
                           "access_token": stack.ls.token})
    assert again.status_code == 200 and json.loads(redis.get(credentials_key(stack.project))) == stored

    # the worker still talks to the real Label Studio with it: a retrain publishes there
    stack.label_next(10, stack.labels)
    stack.wait(lambda: stack.status()["published"], 180, "a publication through the delivered token")


def test_the_workers_webhooks_are_accepted_under_basic_auth(stack_factory, digit_images):
    stack = stack_factory(BASIC_AUTH_USER="ls-user", BASIC_AUTH_PASS="ls-password-123")
    stack.create_project(digit_images.urls[:20], title="basic auth")
    assert httpx.post(f"{stack.url}/setup", json={"project": stack.project, "schema": CONFIG},
                      timeout=10).status_code == 401  # every route but /health and /webhook needs basic auth
    before = stack.status()["events"].get("ANNOTATION_CREATED", 0)
    stack.label_next(3, stack.labels)
    stack.wait(lambda: stack.status()["events"].get("ANNOTATION_CREATED", 0) == before + 3, 30,
               "Label Studio's webhooks to be accepted")
    assert not [h for h in _webhooks(stack) if "ls-password-123" in json.dumps(h)]

