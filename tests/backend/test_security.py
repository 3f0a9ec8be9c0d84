"""Security and robustness findings (issue 20), each with the test that failed before its fix.

What needs a real Label Studio (a forged Host at /setup, a token delivered by /setup, unknown projects,
webhooks under basic auth) is in tests/e2e/test_security.py; this file holds what the backend decides alone.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from rq import Queue

from backend.app import create_app
from core.tokens import WEBHOOK_TOKEN_HEADER, webhook_token
from core.credentials import client_for, credentials_key
from core.image_fetch import ImageFetcher, check_url
from core.model_cache import artifact_path
from core.project_settings import ProjectSettings
from backend.serving import serve_options
from stack.processes import free_port
from stack.settings import FAST_SETTINGS
from core.store import ProjectStore
from plugins.images import ImageLoadError
from plugins.models import build_model
from plugins.models.artifact import save_artifact

SECRET = "s3cret-for-tests-only"
AUTH = {"X-LSAL-Secret": SECRET}
CHOICES = "".join(f'<Choice value="{d}"/>' for d in range(10))
CONFIG = f'<View><Image name="image" value="$image"/><Choices name="label" toName="image">{CHOICES}</Choices></View>'


def _deep(depth: int) -> str:
    """A JSON object with a list nested `depth` deep (written out: json.dumps itself recurses)."""
    return '{"project": 1, "tasks": [], "action": "START_TRAINING", "x": ' + "[" * depth + "1" + "]" * depth + "}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102
        pass


@pytest.fixture
def image_dir(tmp_path):
    """A folder of small digit PNGs behind a local HTTP server: (base_url, folder)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.rint(digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(settings_factory, redis_url, image_dir):
    """An app whose project 5 serves a logistic digits model, images from the image_dir server."""
    base, _ = image_dir
    settings = settings_factory(image_hosts=[base.split("//")[1]], defaults=ProjectSettings(**FAST_SETTINGS))
    from sklearn.datasets import load_digits

    digits = load_digits()
    model = build_model("logistic", 10, committee=1)
    model.fit(np.rint(digits.images[100:300] * 255 / 16).astype(np.uint8)[..., None], digits.target[100:300])
    store = ProjectStore(Redis.from_url(redis_url), 5)
    path = artifact_path(settings.model_dir, 5, store.next_version())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_artifact(path, model, label_map=[str(d) for d in range(10)], metrics={})
    store.add_version({"version": "v1"})
    return TestClient(create_app(settings)), store, settings


class LiveServer:
    """`create_app(settings)` under uvicorn with `lsal serve`'s limits, in a thread, on a free port."""

    def __init__(self, settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", **serve_options(settings))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def _response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# -- no 500s: every bad input gets a 4xx that says what is wrong -------------------------------------------

def test_json_nested_ten_thousand_deep_is_a_400_on_every_json_route(client):
    body = _deep(10_000)
    for method, path in (("POST", "/setup"), ("POST", "/predict"), ("POST", "/webhook"),
                         ("PATCH", "/admin/projects/1/settings"), ("POST", "/admin/projects/1/strategy")):
        response = client.request(method, path, content=body, headers={**AUTH, "content-type": "application/json"})
        assert response.status_code == 400 and "nests deeper" in response.json()["detail"], (path, response.text)
    moderate = _deep(200)  # parses, but is still refused before anything walks it
    assert client.post("/webhook", content=moderate, headers={**AUTH, "content-type": "application/json"}
                       ).status_code == 400


def test_project_ids_that_are_not_ascii_numbers_in_range_are_400(client):
    for project in ("²", "٣", "1" * 5000, "7" * 11, str(2**31), 0, -1, "7.", {"id": "²"}, True, 1.5):
        response = client.post("/webhook", json={"action": "START_TRAINING", "project": project}, headers=AUTH)
        assert response.status_code == 400 and "project" in response.json()["detail"], (project, response.text)
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": "7.1700000000"},
                       headers=AUTH).status_code == 200


def test_admin_routes_refuse_project_ids_the_protocol_routes_refuse(client):
    for project in ("0", "-1", "99999999999", "%C2%B2"):
        for method, path in (("GET", "settings"), ("GET", "status"), ("POST", "train"), ("GET", "audit")):
            response = client.request(method, f"/admin/projects/{project}/{path}", headers=AUTH)
            assert response.status_code == 422, (project, path, response.text)
    assert not Redis.from_url(client.app.state.settings.redis_url).keys("lsal:p:0:*")


def test_task_data_that_is_not_an_object_is_a_400(served):
    client, _, _ = served
    for data in ([1, 2], "http://x/1.png", 7, None):
        response = client.post("/predict", json={"tasks": [{"id": 1, "data": data}], "project": 5,
                                                 "label_config": CONFIG})
        assert response.status_code == 400 and "data" in response.json()["detail"], (data, response.text)


@pytest.mark.parametrize("url", ["http://127.0.0.1/a\tb.png", "http://127.0.0.1/\x00.png", "http://127.0.0.1/\x7f",
                                 "http://127.0.0.1/x\r\nHost: evil", "http://127.0.0.1:99999/x.png",
                                 "http://127.0.0.1:port/x.png", "http:///nohost.png"])
def test_image_urls_with_control_characters_or_bad_ports_are_skipped_as_bad_url(served, url):
    client, _, _ = served
    response = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": url}}], "project": 5,
                                             "label_config": CONFIG})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["result"] == [] and result["error"].startswith("bad_url"), result  # not too_large, not a 500


def test_a_device_that_is_no_device_is_refused_at_settings_time(client):
    for params, where in (({"model": {"name": "cnn", "params": {"device": "foo"}}}, "device"),
                          ({"strategy": {"name": "badge", "params": {"device": "tpu"}}}, "device"),
                          ({"model": {"name": "cnn", "params": {"device": "cuda:999"}}}, "device")):
        response = client.patch("/admin/projects/1/settings", json=params, headers=AUTH)
        assert response.status_code == 422 and where in response.json()["detail"], response.text


def test_settings_that_would_break_training_later_are_refused(client):
    for patch, field in (({"seed": 10**30}, "seed"), ({"seed": -1}, "seed"), ({"retrain_every": 10**30}, "retrain_every"),
                         ({"min_labels": 10**12}, "min_labels"),
                         ({"model": {"name": "logistic", "params": {"committee": 10**9}}}, "committee"),
                         ({"model": {"name": "cnn", "params": {"seed": 2**40}}}, "seed"),
                         ({"strategy": {"name": "random", "params": {"seed": 10**30}}}, "seed")):
        response = client.patch("/admin/projects/1/settings", json=patch, headers=AUTH)
        assert response.status_code == 422 and field in response.json()["detail"], (patch, response.text)


def test_pretrained_path_may_only_name_files_in_the_weights_dir(settings_factory, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "backbone.pt").write_bytes(b"x")
    (tmp_path / "outside.pt").write_bytes(b"x")
    for weights_dir in (None, weights):
        client = TestClient(create_app(settings_factory(weights_dir=weights_dir)))
        for path in ("/etc/passwd", str(tmp_path / "outside.pt"), "../outside.pt", "nope.pt"):
            response = client.patch("/admin/projects/1/settings", headers=AUTH, json={
                "model": {"name": "cnn", "params": {"arch": "small_cnn", "pretrained_path": path}}})
            assert response.status_code == 422 and "LSAL_WEIGHTS_DIR" in response.json()["detail"], (path, response.text)
    ok = client.patch("/admin/projects/1/settings", headers=AUTH, json={
        "model": {"name": "cnn", "params": {"arch": "small_cnn", "pretrained_path": "backbone.pt"}}})
    assert ok.status_code == 200 and ok.json()["model"]["params"]["pretrained_path"] == str(weights / "backbone.pt")


def test_version_names_in_the_store_never_reach_the_filesystem_or_break_metrics(served, tmp_path):
    client, store, settings = served
    outside = tmp_path / "outside.pt"
    outside.write_bytes(b"not a model")
    for name in ("../../outside", "v1/../../x", "latest", "v0", "v01", "v1 "):
        with pytest.raises(ValueError):
            artifact_path(settings.model_dir, 5, name)
        store.redis.set(store.key("current"), name)
        store.redis.hset(store.key("versions"), name, json.dumps({"version": name}))
        assert client.get("/metrics").status_code == 200
        assert client.get("/admin/projects/5/status", headers=AUTH).status_code == 200
        out = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "x"}}], "project": 5,
                                            "label_config": CONFIG})
        assert out.status_code == 200 and out.json()["results"] == []  # nothing serves; nothing was read
        assert client.post("/admin/projects/5/rollback", json={"version": name}, headers=AUTH).status_code == 422


def test_bodies_must_be_json_typed_as_such(client):
    for path in ("/setup", "/predict", "/webhook"):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {**AUTH, **({"content-type": content_type} if content_type else {})}
            response = client.post(path, content=json.dumps({"project": 1, "tasks": []}), headers=headers)
            assert response.status_code == 415 and "application/json" in response.json()["detail"], (path, content_type)


def test_too_many_tasks_in_one_predict_is_a_413(served):
    client, _, settings = served
    tasks = [{"id": i, "data": {"image": "x"}} for i in range(settings.max_predict_tasks + 1)]
    response = client.post("/predict", json={"tasks": tasks, "project": 5, "label_config": CONFIG})
    assert response.status_code == 413 and "LSAL_MAX_PREDICT_TASKS" in response.json()["detail"]


def test_a_huge_labeling_config_is_refused_before_it_is_parsed(client):
    huge = "<View>" + '<Image name="image" value="$image"/>' + "<Text name='t' value='x'/>" * 90_000 + "</View>"
    assert len(huge) > 2 * 2**20
    for path, body in (("/setup", {"project": 1, "schema": huge}),
                       ("/predict", {"project": 1, "tasks": [], "label_config": huge})):
        response = client.post(path, json=body)
        assert response.status_code == 413 and "LSAL_MAX_CONFIG_BYTES" in response.json()["detail"], path


# -- /setup: nothing changes without Label Studio's confirmation ------------------------------------------

def test_unconfirmed_setup_calls_are_rate_limited_and_change_nothing(settings_factory, redis_url):
    settings = settings_factory(label_studio_api_key="k" * 40, setup_checks_per_s=1.0)
    client = TestClient(create_app(settings))
    codes = [client.post("/setup", json={"project": 100 + i, "schema": CONFIG}).status_code for i in range(6)]
    assert codes[:2] == [502, 502] and 429 in codes[2:], codes  # Label Studio (port 9) cannot confirm them
    redis = Redis.from_url(redis_url)
    assert not redis.smembers("lsal:projects") and Queue("lsal", connection=redis).count == 0


def test_a_stored_hostname_is_never_used_only_label_studio_url(settings_factory, redis_url):
    redis = Redis.from_url(redis_url)
    redis.set(credentials_key(4), json.dumps({"hostname": "http://attacker.example", "token": "t" * 40}))
    client = client_for(settings_factory(label_studio_url="http://127.0.0.1:8080"), redis, 4)
    assert client.url == "http://127.0.0.1:8080"


# -- /webhook: the project's token in every auth mode -----------------------------------------------------

def test_webhooks_authenticate_with_the_projects_token_also_under_basic_auth(settings_factory, redis_url):
    for extra in ({}, {"basic_auth_user": "ls", "basic_auth_pass": "pw"}):
        client = TestClient(create_app(settings_factory(**extra)))
        event = {"action": "START_TRAINING", "project": {"id": 12}}
        token = {WEBHOOK_TOKEN_HEADER: webhook_token(SECRET, 12)}
        assert client.post("/webhook", json=event, headers=token).status_code == 200, extra
        other = {WEBHOOK_TOKEN_HEADER: webhook_token(SECRET, 13)}
        assert client.post("/webhook", json=event, headers=other).status_code == 401  # another project's
        assert client.post("/webhook", json=event).status_code == 401
        if extra:  # the token opens nothing but its project's webhook
            assert client.get("/admin/projects/12/status", headers=token).status_code == 401
            assert client.get("/metrics", headers=token).status_code == 401


def test_the_webhook_token_is_not_the_secret_and_differs_per_project():
    assert webhook_token(SECRET, 1) != webhook_token(SECRET, 2)
    assert SECRET not in webhook_token(SECRET, 1) and webhook_token("other", 1) != webhook_token(SECRET, 1)


# -- admin changes leave an audit record --------------------------------------------------------------------

def test_admin_changes_are_audited_without_secrets(client, caplog):
    caplog.set_level("INFO")
    client.patch("/admin/projects/3/settings", json={"retrain_every": 7}, headers=AUTH)
    client.post("/admin/projects/3/strategy", json={"name": "margin"}, headers=AUTH)
    client.post("/admin/projects/3/train", headers=AUTH)
    log = client.get("/admin/projects/3/audit", headers=AUTH).json()
    assert [r["action"] for r in log] == ["settings", "strategy", "train"]
    assert log[0]["detail"] == {"changed": {"retrain_every": 7}} and "LSAL_SECRET" in log[0]["actor"]
    assert all(isinstance(r["at"], float) for r in log)
    status = client.get("/admin/projects/3/status", headers=AUTH).json()
    assert [r["action"] for r in status["audit"]] == ["settings", "strategy", "train"]
    assert "audit: project 3 settings" in caplog.text and SECRET not in caplog.text


# -- bounded work per request --------------------------------------------------------------------------------

def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(settings_factory):
    settings = settings_factory(max_body_bytes=64 * 1024)
    with LiveServer(settings) as live:
        sock = live.connect()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sent, answer = 0, b""
        sock.settimeout(0.05)
        chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
        while sent < 64 * 2**20 and not answer:  # a client that would send 64 MiB
            try:
                sock.sendall(chunk)
                sent += 16384
                answer = sock.recv(4096)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(5)
        answer += _response_head(sock) if b"\r\n\r\n" not in answer else b""
        assert b" 413 " in answer.split(b"\r\n", 1)[0], answer[:200]
        assert sent < 4 * 2**20, f"the server read {sent} bytes before refusing"  # not the whole body


def test_a_request_head_that_never_completes_is_closed(settings_factory):
    with LiveServer(settings_factory(head_timeout_s=1.0)) as live:
        sock = live.connect()
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x")  # then a byte now and then, never the end
        sock.settimeout(0.3)
        started, closed = time.monotonic(), False
        while not closed and time.monotonic() - started < 8:
            try:
                sock.sendall(b"x")
                closed = sock.recv(1024) == b""
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        assert closed, "the half-sent request was still open after 8 s"


def test_a_body_that_trickles_in_is_refused_with_408(settings_factory):
    with LiveServer(settings_factory(body_timeout_s=1.0, head_timeout_s=30.0)) as live:
        sock = live.connect()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        sock.settimeout(6)
        head = _response_head(sock)
        assert b" 408 " in head.split(b"\r\n", 1)[0], head


class _SlowImage(http.server.BaseHTTPRequestHandler):
    """Serves a PNG one byte every 0.2 s (a server that never times out a read)."""

    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            for byte in self.body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):  # noqa: D102
        pass


@pytest.fixture
def slow_server():
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    _SlowImage.body = buffer.getvalue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowImage)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_image_timeout_is_a_deadline_for_the_whole_download(settings_factory, slow_server):
    fetcher = ImageFetcher(settings_factory(image_hosts=[slow_server], image_timeout_s=1.0), None)
    started = time.monotonic()
    with pytest.raises(ImageLoadError) as err:
        fetcher.fetch(f"http://{slow_server}/slow.png")  # ~70 bytes at 5 bytes/s: 14 s without a deadline
    assert err.value.reason == "timeout" and time.monotonic() - started < 4
    fetcher.close()


def test_one_requests_slow_images_do_not_hold_up_another_request(served, settings_factory, slow_server, image_dir):
    _, _, base_settings = served
    base, _ = image_dir
    settings = settings_factory(image_hosts=[slow_server, base.split("//")[1]], image_timeout_s=3.0,
                                defaults=ProjectSettings(**FAST_SETTINGS))
    client = TestClient(create_app(settings))
    slow = {"tasks": [{"id": i, "data": {"image": f"http://{slow_server}/{i}.png"}} for i in range(16)],
            "project": 5, "label_config": CONFIG}
    fast = {"tasks": [{"id": 99, "data": {"image": f"{base}/0.png"}}], "project": 5, "label_config": CONFIG}
    finished: dict[str, float] = {}

    def post(name: str, body: dict) -> None:
        assert client.post("/predict", json=body).status_code == 200
        finished[name] = time.monotonic()

    first = threading.Thread(target=post, args=("slow", slow))
    first.start()
    time.sleep(0.5)  # the slow request's downloads are under way
    post("fast", fast)
    first.join()
    assert finished["fast"] < finished["slow"], finished  # before: it waited for the other request's images


def test_a_request_decodes_at_most_its_pixel_budget(served, settings_factory, image_dir):
    base, folder = image_dir
    Image.new("L", (300, 300)).save(folder / "big.png")
    settings = settings_factory(image_hosts=[base.split("//")[1]], request_max_pixels=200_000,
                                defaults=ProjectSettings(**FAST_SETTINGS))
    client = TestClient(create_app(settings))
    tasks = [{"id": i, "data": {"image": f"{base}/big.png"}} for i in range(4)]
    results = client.post("/predict", json={"tasks": tasks, "project": 5, "label_config": CONFIG}).json()["results"]
    errors = [r.get("error", "") for r in results]
    assert sum(e.startswith("too_large") and "LSAL_REQUEST_MAX_PIXELS" in e for e in errors) == 2, errors


def test_a_huge_image_is_shrunk_while_decoding(tmp_path):
    """7999 x 7999 RGBA PNG: decoded in full and composited in float64 it took 4.4 GB; now < 1 GB."""
    path = tmp_path / "big.png"
    Image.new("RGBA", (7999, 7999), (200, 100, 50, 128)).save(path)
    code = ("import resource, sys; from plugins.images import decode_image, resize; "
            "data = open(sys.argv[1], 'rb').read(); base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "out = resize(decode_image(data, max_pixels=70_000_000, target=(32, 32)), (32, 32)); "
            "print(out.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    shape, peak_mib = out.stdout.rsplit(" ", 1)
    assert shape == "(32, 32, 3)" and int(peak_mib) < 1024, out.stdout


def test_a_stuck_redis_answers_503_quickly_and_leaves_the_event_loop_free(settings_factory, redis_server):
    settings = settings_factory(redis_timeout_s=0.3)
    event = json.dumps({"action": "START_TRAINING", "project": 3}).encode()
    with LiveServer(settings) as live:
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{live.port}", timeout=10) as http:
            assert http.post("/webhook", content=event, headers={**AUTH, "content-type": "application/json"}
                             ).status_code == 200
            os.kill(redis_server.proc.pid, signal.SIGSTOP)  # frozen, not gone: connections hang
            try:
                answers: list = []
                stuck = [threading.Thread(target=lambda: answers.append(http.post(
                    "/webhook", content=event, headers={**AUTH, "content-type": "application/json"})))
                    for _ in range(4)]
                started = time.monotonic()
                for t in stuck:
                    t.start()
                health = http.get("/health")
                health_s = time.monotonic() - started
                for t in stuck:
                    t.join()
                took = time.monotonic() - started
            finally:
                os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert health.status_code == 200 and health_s < 0.3, health_s  # the event loop never waited on Redis
    assert [a.status_code for a in answers] == [503] * 4 and took < 1.0, took  # within Label Studio's 1 s


def test_check_url_accepts_what_label_studio_serves():
    for url in ("/data/upload/1/a.png", "http://host:8080/x.png?a=1", "https://h/x%20y.png"):
        assert check_url(url) == url


def test_the_detectors_pretrained_file_may_only_be_named_inside_the_weights_dir(settings_factory, tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    client = TestClient(create_app(settings_factory(weights_dir=weights)))
    for path in ("/etc/passwd", "../outside.pt"):
        response = client.patch("/admin/projects/1/settings", headers=AUTH, json={
            "model": {"name": "detector", "params": {"pretrained": path}}})
        assert response.status_code == 422 and "LSAL_WEIGHTS_DIR" in response.json()["detail"], (path, response.text)
    for named in ("none", "imagenet"):  # no file of the admin's: the shipped weights, or none
        response = client.patch("/admin/projects/1/settings", headers=AUTH, json={
            "model": {"name": "detector", "params": {"pretrained": named}}})
        assert response.status_code == 200 and response.json()["model"]["params"]["pretrained"] == named
