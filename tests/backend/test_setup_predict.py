"""/setup and /predict: config checks, one model load per version, pre-annotations with the published score."""

from __future__ import annotations

import http.server
import threading
from functools import partial

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from sklearn.datasets import load_digits

from backend.app import create_app
from core.model_cache import artifact_path
from core.store import ProjectStore
from plugins.models import build_model
from plugins.models.artifact import save_artifact
from stack.settings import FAST_SETTINGS

CHOICES = "".join(f'<Choice value="{d}"/>' for d in range(10))
CONFIG = f'<View><Image name="image" value="$image"/><Choices name="label" toName="image">{CHOICES}</Choices></View>'


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102
        pass


@pytest.fixture
def images(tmp_path):
    """40 digits as PNG files behind a local HTTP server: (base_url, labels)."""
    digits = load_digits()
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(np.rint(digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", [str(d) for d in digits.target[:40]]
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(settings_factory, redis_url, images, tmp_path):
    """An app whose project 5 serves a logistic model trained on 200 other digits."""
    base, _ = images
    from core.project_settings import ProjectSettings

    settings = settings_factory(image_hosts=[base.split("//")[1]], defaults=ProjectSettings(**FAST_SETTINGS))
    digits = load_digits()
    x = np.rint(digits.images[100:300] * 255 / 16).astype(np.uint8)[..., None]
    model = build_model("logistic", 10, committee=1)
    model.fit(x, digits.target[100:300])
    store = ProjectStore(Redis.from_url(redis_url), 5)
    version = store.next_version()
    save_artifact(_mkdir(artifact_path(settings.model_dir, 5, version)), model,
                  label_map=[str(d) for d in range(10)], metrics={})
    store.add_version({"version": version})
    return TestClient(create_app(settings)), store


def _mkdir(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_setup_checks_the_config_first_and_changes_nothing_label_studio_did_not_confirm(client):
    # (a confirmed /setup answering 200 with a string model version is checked against a real Label Studio
    # in tests/e2e/test_security.py)
    text = '<View><Audio name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    bad = client.post("/setup", json={"project": "3.1700000000", "schema": text})
    assert bad.status_code == 422 and "image classification" in bad.json()["detail"]
    assert client.post("/setup", json={"schema": CONFIG}).status_code == 400
    # no token at all (no LABEL_STUDIO_API_KEY, none delivered): nothing to confirm the project with
    refused = client.post("/setup", json={"project": "3.1700000000", "schema": CONFIG})
    assert refused.status_code == 403 and "LABEL_STUDIO_API_KEY" in refused.json()["detail"]
    redis = client.app.state.redis
    assert not redis.smembers("lsal:projects") and not redis.keys("lsal:p:3:*")


def test_predict_before_any_training_returns_no_results(client):
    out = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "x"}}], "project": "9.1",
                                        "label_config": CONFIG})
    assert out.status_code == 200 and out.json() == {"results": [], "model_version": "lsal-untrained"}


def test_predict_serves_pre_annotations_from_one_loaded_model(served, images):
    client, store = served
    base, labels = images
    tasks = [{"id": 100 + i, "data": {"image": f"{base}/{i}.png"}} for i in range(40)]
    for _ in range(3):
        out = client.post("/predict", json={"tasks": tasks, "project": "5.1", "label_config": CONFIG})
        assert out.status_code == 200, out.text
    results = out.json()["results"]
    assert len(results) == 40
    chosen = [r["result"][0]["value"]["choices"][0] for r in results]
    assert np.mean(np.asarray(chosen) == np.asarray(labels)) > 0.8  # a real model, not a constant
    assert all(r["result"][0]["from_name"] == "label" and r["result"][0]["to_name"] == "image" for r in results)
    assert client.app.state.models.loads == 1  # loaded once, not per request
    # a task in the published order carries its priority as score
    store.set_published({"model_version": "lsal-v1-margin-p1", "version": "v1"},
                        {100: {"rank": 0, "score": 0.0}, 101: {"rank": 1, "score": 0.5}})
    out = client.post("/predict", json={"tasks": tasks[:3], "project": "5.1", "label_config": CONFIG}).json()
    assert out["model_version"] == "lsal-v1-margin-p1"
    assert [r["score"] for r in out["results"]][:2] == [0.0, 0.5] and out["results"][2]["score"] >= 1.0


def test_predict_skips_unusable_images_with_a_reason(served, images):
    client, _ = served
    base, _ = images
    tasks = [{"id": 1, "data": {"image": f"{base}/0.png"}}, {"id": 2, "data": {"image": f"{base}/broken.png"}},
             {"id": 3, "data": {"image": f"{base}/missing.png"}}, {"id": 4, "data": {}},
             {"id": 5, "data": {"image": "http://169.254.169.254/latest/meta-data"}},
             {"id": 6, "data": {"image": "file:///etc/passwd"}}]
    out = client.post("/predict", json={"tasks": tasks, "project": 5, "label_config": CONFIG})
    assert out.status_code == 200, out.text
    results = out.json()["results"]
    assert len(results) == 6 and results[0]["result"]
    errors = [r.get("error", "") for r in results[1:]]
    assert [e.split(":")[0] for e in errors] == ["corrupt", "not_found", "no_image", "not_allowed",
                                                 "unsupported_url"]


def test_predict_rejects_bad_requests_with_4xx(served):
    client, _ = served
    assert client.post("/predict", json={"tasks": "nope", "project": 5}).status_code == 400
    assert client.post("/predict", json={"tasks": [{"id": 1}], "project": 5, "label_config": 7}).status_code == 400
    other = CONFIG.replace('<Choice value="9"/>', "")
    response = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "x"}}], "project": 5,
                                             "label_config": other})
    assert response.status_code == 409 and "retrain" in response.json()["detail"]


def test_with_redis_down_predict_keeps_answering_and_webhooks_get_503(served, images, redis_server):
    client, _ = served
    base, _ = images
    body = {"tasks": [{"id": 1, "data": {"image": f"{base}/0.png"}}], "project": 5, "label_config": CONFIG}
    before = client.post("/predict", json=body).json()
    redis_server.stop()
    try:
        during = client.post("/predict", json=body)
        assert during.status_code == 200 and during.json()["results"][0]["result"] == before["results"][0]["result"]
        hook = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 5}},
                           headers={"X-LSAL-Secret": "s3cret-for-tests-only"})
        assert hook.status_code == 503 and hook.headers["retry-after"] == "5"
        cold = client.post("/predict", json={**body, "project": 6})  # a project it never served: no state
        assert cold.status_code == 503
    finally:
        redis_server.start()
    assert client.post("/predict", json=body).status_code == 200


def test_images_over_the_size_cap_are_skipped_with_a_reason(settings_factory, redis_url, images, served):
    from core.project_settings import ProjectSettings

    base, _ = images
    small = settings_factory(image_hosts=[base.split("//")[1]], image_max_bytes=50,
                             defaults=ProjectSettings(**FAST_SETTINGS))
    client = TestClient(create_app(small))
    out = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": f"{base}/0.png"}}], "project": 5,
                                        "label_config": CONFIG}).json()
    assert out["results"][0]["result"] == [] and out["results"][0]["error"].startswith("too_large")


def test_concurrent_first_requests_load_the_model_once(served, images):
    from concurrent.futures import ThreadPoolExecutor

    client, _ = served
    base, _ = images
    body = {"tasks": [{"id": 1, "data": {"image": f"{base}/0.png"}}], "project": 5, "label_config": CONFIG}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: client.post("/predict", json=body).status_code, range(16)))
    assert codes == [200] * 16 and client.app.state.models.loads == 1
