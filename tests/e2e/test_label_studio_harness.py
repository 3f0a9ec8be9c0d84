"""The end-to-end harness itself: a real Label Studio accepts our token, a project, tasks pointing at the
served digit images, and hands out tasks through /next."""

from __future__ import annotations

import io
import urllib.request

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from core.ls_client import LabelStudioClient
from stack.annotator import DIGITS_LABEL_CONFIG as LABEL_CONFIG


def test_project_import_and_next(label_studio, digit_images):
    ls = label_studio
    me = ls.get("/api/current-user/whoami")
    assert me.status == 200, me.text
    assert me.json()["email"] == ls.username

    r = ls.post("/api/projects/", json={"title": "harness", "label_config": LABEL_CONFIG})
    assert r.status == 201, r.text
    project = r.json()
    pid = project["id"]
    assert project["label_config"] == LABEL_CONFIG

    urls = digit_images.urls[:20]
    r = ls.post(f"/api/projects/{pid}/import", json=[{"image": u} for u in urls])
    assert r.status == 201, r.text
    assert r.json()["task_count"] == 20

    r = ls.get(f"/api/tasks/?project={pid}&page_size=100")
    assert r.status == 200, r.text
    tasks = r.json()["tasks"]
    assert sorted(t["data"]["image"] for t in tasks) == sorted(urls)

    # the client asks for chosen tasks only (stream mode scores just the imported ones), across chunks
    client = LabelStudioClient(ls.url, ls.token)
    try:
        ids = sorted(t["id"] for t in tasks)
        chosen = [ids[0], ids[3], ids[7], ids[19]]
        got = list(client.tasks(pid, page_size=3, ids=chosen + [ids[3]]))
        assert sorted(t["id"] for t in got) == chosen
        assert {t["data"]["image"] for t in got} <= set(urls)
        assert sorted(t["id"] for t in client.tasks(pid, page_size=7)) == ids
    finally:
        client.close()

    r = ls.get(f"/api/projects/{pid}/next")
    assert r.status == 200, r.text
    nxt = r.json()
    assert nxt["id"] in {t["id"] for t in tasks}
    assert nxt["data"]["image"] in urls

    with urllib.request.urlopen(nxt["data"]["image"], timeout=10) as resp:
        assert resp.status == 200
        img = Image.open(io.BytesIO(resp.read()))
    assert img.mode == "L" and img.size == (32, 32)


def test_digit_images(digit_images):
    assert len(digit_images.urls) == len(digit_images.labels) == 200
    assert digit_images.labels[:10] == [str(d) for d in range(10)]  # load_digits starts 0, 1, ..., 9
    img = Image.open(digit_images.paths[0])
    assert img.mode == "L" and img.size == (32, 32)
    digits = load_digits()
    expected = np.rint(digits.images[0] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(img)[::4, ::4], expected)
    np.testing.assert_array_equal(np.asarray(img), np.kron(expected, np.ones((4, 4), np.uint8)))
