"""The Label Studio client against a real local HTTP server that fails on purpose: bounded retries, clear errors."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from core.ls_client import LabelStudioClient, LabelStudioError


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 `fail` times, then 200 with {"created": n}; 400 on /bad; records every call."""

    fail = 0
    calls: list[str] = []

    def _answer(self) -> None:
        Flaky.calls.append(f"{self.command} {self.path}")
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        if self.path.startswith("/bad"):
            code, out = 400, {"detail": "Validation error"}
        elif Flaky.fail > 0:
            Flaky.fail -= 1
            code, out = 503, {"detail": "busy"}
        else:
            code, out = 200, {"created": len(body) if isinstance(body, list) else 0}
        data = json.dumps(out).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args):  # noqa: D102
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    Flaky.calls, Flaky.fail = [], 0
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_5xx_is_retried_with_backoff_then_succeeds(server):
    Flaky.fail = 2
    client = LabelStudioClient(server, "t" * 40, max_retries=3, backoff_s=0.01)
    assert client.import_predictions(1, [{"task": 1}, {"task": 2}]) == 2
    assert len(Flaky.calls) == 3


def test_retries_are_bounded_and_the_error_says_what_failed(server):
    Flaky.fail = 10
    client = LabelStudioClient(server, "t" * 40, max_retries=2, backoff_s=0.01)
    with pytest.raises(LabelStudioError, match="update project 3: Label Studio answered HTTP 503"):
        client.update_project(3, model_version="x")
    assert len(Flaky.calls) == 3


def test_client_errors_fail_at_once_and_never_show_the_token(server):
    client = LabelStudioClient(server, "secret-token-123", max_retries=3, backoff_s=0.01)
    with pytest.raises(LabelStudioError) as err:
        client.request("GET", "/bad", "read something")
    assert len(Flaky.calls) == 1 and "HTTP 400" in str(err.value) and "secret-token-123" not in str(err.value)


def test_unreachable_label_studio_is_a_clear_error():
    client = LabelStudioClient("http://127.0.0.1:9", "t" * 40, max_retries=1, backoff_s=0.01)
    with pytest.raises(LabelStudioError, match="cannot reach Label Studio"):
        client.whoami()
