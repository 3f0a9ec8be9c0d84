"""Rotating LSAL_SECRET: the webhook registered in Label Studio gets the project's token derived from the new
secret (through /setup when the admin updates the model connection, or through reconciliation), so events
are accepted again; the secret itself is never in Label Studio's webhooks."""

from __future__ import annotations

import httpx

from core.tokens import WEBHOOK_TOKEN_HEADER, webhook_token

ROTATED = ["rotated-secret-one-9f8e7d6c5b", "rotated-secret-two-1a2b3c4d5e"]


def test_a_rotated_secret_is_registered_in_label_studio_and_events_flow_again(stack_factory, digit_images):
    stack = stack_factory()
    stack.create_project(digit_images.urls[:30], title="rotation")
    hook_url = f"{stack.url}/webhook"

    def headers() -> list[dict]:
        hooks = stack.ok(stack.ls.get(f"/api/webhooks/?project={stack.project}"), "webhooks")
        return [h.get("headers") for h in hooks if h["url"] == hook_url]

    def events() -> int:
        return stack.status()["events"].get("ANNOTATION_CREATED", 0)

    def token_of(secret: str) -> list[dict]:
        return [{WEBHOOK_TOKEN_HEADER: webhook_token(secret, stack.project)}]

    first = stack.env["LSAL_SECRET"]
    assert headers() == token_of(first)

    # 1. the admin's way: restart with the new secret, then update the model connection's password in
    #    Label Studio, which calls /setup; the backend notices the rotation and re-registers the webhook
    stack.restart(LSAL_SECRET=ROTATED[0])
    old = httpx.get(f"{stack.url}/admin/projects/{stack.project}/status", headers={"X-LSAL-Secret": first},
                    timeout=10)
    assert old.status_code == 401
    # (the whole form, as the UI sends it: Label Studio 1.23 answers a PATCH without `url` or `project` with a 500)
    stack.ok(stack.ls.patch(f"/api/ml/{stack.ml['id']}", json={
        "project": stack.project, "url": stack.url, "title": "lsal", "auth_method": "BASIC_AUTH", "basic_auth_user": "lsal",
        "basic_auth_pass": ROTATED[0]}), "update the model connection's password")
    stack.wait(lambda: headers() == token_of(ROTATED[0]), 60, "the webhook to carry the new secret")
    before = events()
    stack.label_next(1, stack.labels)
    stack.wait(lambda: events() == before + 1, 30, "the annotation event to be accepted")

    # 2. nobody touches Label Studio: reconciliation re-registers the webhook, once
    stack.restart(LSAL_SECRET=ROTATED[1])
    out = stack.lsal("reconcile", "--project", str(stack.project))
    assert out.returncode == 0 and "webhook re-registered" in out.stdout, out.stdout + out.stderr
    stack.wait(lambda: headers() == token_of(ROTATED[1]), 60, "reconciliation to re-register")
    again = stack.lsal("reconcile", "--project", str(stack.project))
    assert again.returncode == 0 and "webhook" not in again.stdout, again.stdout
    before = events()
    stack.label_next(1, stack.labels)
    stack.wait(lambda: events() == before + 1, 30, "the annotation event to be accepted")

    for proc in (*stack.retired, *stack.workers, stack.backend):
        log = proc.log_tail(10**7)
        assert not any(secret in log for secret in ROTATED), f"a rotated secret leaked into the {proc.name} log"
