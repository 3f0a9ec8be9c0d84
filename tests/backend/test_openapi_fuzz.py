"""Schemathesis against the backend's own OpenAPI document: every operation, with bodies generated from its
request schema (valid and invalid ones) and the secret, never answers 500, and every error says what was
wrong. (Label Studio is not running here: routes that must ask it answer 502, the upstream's failure; and
a Redis call slower than LSAL_REDIS_TIMEOUT_S on a loaded machine answers 503. Those are the only 5xx.)"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from backend.app import create_app

SECRET = "s3cret-for-tests-only"


def test_every_operation_has_its_request_schema(settings_factory):
    spec = create_app(settings_factory()).openapi()
    for path, method in (("/setup", "post"), ("/predict", "post"), ("/webhook", "post"),
                         ("/admin/projects/{project}/strategy", "post"), ("/admin/projects/{project}/rollback", "post")):
        body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        assert name in spec["components"]["schemas"], (path, name)
    task = spec["components"]["schemas"]["Task"]
    assert task["properties"]["data"]["type"] == "object"


def test_no_operation_answers_a_server_error(settings_factory):
    # (schemathesis' own pytest plugin does not run on pytest 9; its strategies are driven here directly)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings_factory()))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(headers={"X-LSAL-Secret": SECRET})
            upstream = response.status_code == 502 and "Label Studio" in response.text
            busy = response.status_code == 503 and "Redis unavailable" in response.text  # a loaded machine
            if not (upstream or busy):
                case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                content_type = response.headers.get("content-type") or [""]  # schemathesis: a list per header
                assert content_type[0].startswith("application/json"), response.text
                assert response.json().get("detail"), (operation.label, response.text)

        check()
