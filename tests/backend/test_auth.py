"""Secrets: /webhook and /admin need LSAL_SECRET; optional basic auth guards every route but /health."""

from __future__ import annotations

import base64

from fastapi.testclient import TestClient

from backend.app import create_app
from core.tokens import SECRET_HEADER

SECRET = "s3cret-for-tests-only"  # the same value the conftest's settings carry
EVENT = {"action": "PROJECT_UPDATED", "project": {"id": 1}}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_webhook_and_admin_refuse_calls_without_the_secret(client):
    for headers in ({}, {SECRET_HEADER: "wrong"}, {"Authorization": "Bearer wrong"}, _basic("lsal", "wrong")):
        assert client.post("/webhook", json=EVENT, headers=headers).status_code == 401
        assert client.get("/admin/projects/1/status", headers=headers).status_code == 401
    assert client.get("/health").status_code == 200


def test_the_secret_is_accepted_as_header_bearer_or_basic_password(client):
    for headers in ({SECRET_HEADER: SECRET}, {"Authorization": f"Bearer {SECRET}"}, _basic("anyone", SECRET)):
        assert client.post("/webhook", json=EVENT, headers=headers).status_code == 200, headers


def test_without_a_configured_secret_the_protected_routes_are_off(settings_factory):
    client = TestClient(create_app(settings_factory(secret=None)))
    response = client.post("/webhook", json=EVENT, headers={SECRET_HEADER: ""})
    assert response.status_code == 503 and "LSAL_SECRET" in response.json()["detail"]


def test_basic_auth_guards_every_route_but_health(settings_factory):
    client = TestClient(create_app(settings_factory(basic_auth_user="ls", basic_auth_pass="pw")))
    assert client.get("/health").status_code == 200
    for method, path in (("POST", "/setup"), ("POST", "/predict"), ("GET", "/metrics"), ("POST", "/webhook")):
        assert client.request(method, path).status_code == 401, path
    ok = _basic("ls", "pw")
    assert client.get("/metrics", headers=ok).status_code == 200
    # Label Studio's "Start Training" carries the connection's basic auth: it counts as the secret
    assert client.post("/webhook", json=EVENT, headers=ok).status_code == 200
    assert client.post("/webhook", json=EVENT, headers=_basic("ls", "nope")).status_code == 401


def test_secrets_never_appear_in_responses(client):
    bodies = [client.post("/webhook", json=EVENT).text, client.get("/admin/projects/1/status").text,
              client.get("/openapi.json").text]
    assert not any(SECRET in b for b in bodies)


def test_the_secret_tag_notices_a_rotation_without_revealing_the_secret() -> None:
    from core.tokens import secret_tag, webhook_outdated

    tag = secret_tag("first-secret-value")
    assert tag == secret_tag("first-secret-value") and len(tag) == 24
    assert tag != secret_tag("second-secret-value") and "first" not in tag
    assert secret_tag(None) is None and secret_tag("") is None
    hook = "http://ml:9090/webhook"
    registered = {"webhook_url": hook, "webhook_secret_tag": tag}
    assert not webhook_outdated(registered, hook, "first-secret-value")
    assert webhook_outdated(registered, hook, "second-secret-value")  # rotated
    assert webhook_outdated(registered, "http://ml2:9090/webhook", "first-secret-value")  # moved
    assert webhook_outdated({"webhook_url": hook}, hook, "first-secret-value")  # registered before tags existed
