"""Property tests: whatever JSON (or bytes) arrives at a route, the answer is a clear 2xx/4xx, never a 500."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.app import create_app

SECRET = "s3cret-for-tests-only"
AUTH = {"X-LSAL-Secret": SECRET}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=10), inner,
                                                                             max_size=4)), max_leaves=12)
ACTIONS = st.sampled_from(["ANNOTATION_CREATED", "ANNOTATIONS_DELETED", "START_TRAINING", "TASKS_CREATED",
                           "PROJECT_UPDATED", "NOPE", ""])
PROJECTS = st.one_of(json_values, st.builds(lambda i: {"id": i}, st.integers(-5, 10**12)),
                     st.integers(-5, 10**12), st.from_regex(r"\d{1,6}\.\d{1,10}", fullmatch=True))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _no_500(response) -> None:
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json() or response.status_code < 300


@FUZZ
@given(body=json_values)
def test_any_json_on_any_route_is_never_a_500(settings_factory, body):
    client = TestClient(create_app(settings_factory()))
    for method, path in (("POST", "/setup"), ("POST", "/predict"), ("POST", "/webhook"),
                         ("PATCH", "/admin/projects/1/settings"), ("POST", "/admin/projects/1/strategy"),
                         ("POST", "/admin/projects/1/rollback")):
        _no_500(client.request(method, path, content=json.dumps(body), headers={**AUTH,
                                                                                 "content-type": "application/json"}))


@FUZZ
@given(action=ACTIONS, project=PROJECTS, extra=st.dictionaries(st.sampled_from(["tasks", "annotations", "annotation"]),
                                                               json_values, max_size=3))
def test_webhook_shaped_payloads_are_handled(settings_factory, action, project, extra):
    client = TestClient(create_app(settings_factory()))
    _no_500(client.post("/webhook", json={"action": action, "project": project, **extra}, headers=AUTH))


@FUZZ
@given(tasks=st.lists(st.dictionaries(st.sampled_from(["id", "data", "project"]), json_values, max_size=3),
                      max_size=4), project=PROJECTS, config=st.one_of(st.none(), st.text(max_size=40), json_values))
def test_predict_shaped_payloads_are_handled(settings_factory, tasks, project, config):
    client = TestClient(create_app(settings_factory()))
    _no_500(client.post("/predict", json={"tasks": tasks, "project": project, "label_config": config}))


@FUZZ
@given(raw=st.binary(max_size=200))
def test_raw_bytes_are_refused_cleanly(settings_factory, raw):
    client = TestClient(create_app(settings_factory()))
    for path in ("/setup", "/predict", "/webhook"):
        _no_500(client.post(path, content=raw, headers={**AUTH, "content-type": "application/json"}))


@FUZZ
@given(name=st.text(max_size=15), params=st.dictionaries(st.text(max_size=12), json_values, max_size=3))
def test_strategy_settings_from_the_admin_are_validated(settings_factory, name, params):
    client = TestClient(create_app(settings_factory()))
    response = client.post("/admin/projects/1/strategy", json={"name": name, "params": params}, headers=AUTH)
    _no_500(response)
