"""Fixtures for end-to-end tests against a real Label Studio (installed in `.ls-venv` by
`.ci/setup-label-studio`), run by `stack.processes.LabelStudioServer` (the demo runs it the same way).

* `ls_template` (session): starts Label Studio once on an empty data dir, so the ~40 s of migrations and
  the creation of the admin user, its organization and its API token happen once; then stops it and keeps
  the data dir as a template.
* `label_studio` (function): a copy of the template, a Label Studio process of its own on a free port.
* `digit_images` (function): the first 200 scikit-learn digits as PNG files behind a local HTTP server.

Without `.ls-venv/bin/label-studio` every test here is skipped, unless LSAL_REQUIRE_E2E is set (CI), in
which case they fail.
"""

from __future__ import annotations

import http.server
import json as jsonlib
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from stack.processes import DEFAULT_LS_BIN, LabelStudioServer, free_port

REPO = Path(__file__).resolve().parents[2]
LS_BIN = DEFAULT_LS_BIN

TEMPLATE_TIMEOUT_S = float(os.environ.get("LSAL_LS_TEMPLATE_TIMEOUT", "300"))  # migrations: 25-40 s on 2 cores
START_TIMEOUT_S = float(os.environ.get("LSAL_LS_START_TIMEOUT", "90"))
TASK_LOCK_TTL_S = 1  # /next re-ranks one second after a task was handed out without being labeled


@pytest.fixture
def free_port_factory():
    """`free_port` for tests that need ports of their own (an ML backend, a webhook receiver)."""
    return free_port


# ----------------------------------------------------------------------------------------------------------
# HTTP helper (the project's .venv has no `requests`)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None


def http_request(method: str, url: str, json: Any = None, headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> Response:
    """One HTTP request with urllib; returns the response whatever its status (no exception on 4xx/5xx)."""
    data = None
    hdrs = dict(headers or {})
    if json is not None:
        data = jsonlib.dumps(json).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method.upper())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read(), dict(e.headers or {}))


# ----------------------------------------------------------------------------------------------------------
# Label Studio processes
# ----------------------------------------------------------------------------------------------------------


def _require_label_studio() -> None:
    if LS_BIN.exists():
        return
    reason = f"Label Studio is not installed ({LS_BIN.relative_to(REPO)} missing; run .ci/setup-label-studio)"
    if os.environ.get("LSAL_REQUIRE_E2E"):
        pytest.fail(reason + " and LSAL_REQUIRE_E2E is set", pytrace=False)
    pytest.skip(reason)


class LabelStudio(LabelStudioServer):
    """A running Label Studio: `.url`, `.token`, `.headers`, `.log_path`, `.data_dir`, `.port`, and
    `.request(method, path, json=None)` / `.get` / `.post` / `.patch` / `.delete` for its API."""

    def __init__(self, data_dir: Path, log_path: Path):
        super().__init__(data_dir, ls_bin=LS_BIN, log_path=log_path, task_lock_ttl=TASK_LOCK_TTL_S)

    def request(self, method: str, path: str, json: Any = None, timeout: float = 60.0, **kw) -> Response:
        url = path if path.startswith("http") else self.url + "/" + path.lstrip("/")
        return http_request(method, url, json=json, headers={**self.headers, **kw.pop("headers", {})},
                            timeout=timeout)

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw) -> Response:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw) -> Response:
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, json: Any = None, **kw) -> Response:
        return self.request("DELETE", path, json=json, **kw)

    def start(self, timeout: float = START_TIMEOUT_S) -> LabelStudio:
        super().start(timeout)
        return self


@dataclass
class LabelStudioTemplate:
    data_dir: Path  # migrated data dir with the admin user, its organization and token
    migrate_seconds: float


@pytest.fixture(scope="session")
def ls_template(tmp_path_factory) -> LabelStudioTemplate:
    _require_label_studio()
    root = tmp_path_factory.mktemp("ls-template")
    ls = LabelStudio(root / "data", root / "label-studio.log")
    t0 = time.monotonic()
    ls.start(timeout=TEMPLATE_TIMEOUT_S)
    try:
        r = ls.get("/api/current-user/whoami")
        if r.status != 200 or r.json().get("email") != ls.username:
            raise RuntimeError(f"the admin token does not authenticate: {r.status} {r.text[:500]}")
    finally:
        ls.stop()
    return LabelStudioTemplate(data_dir=ls.data_dir, migrate_seconds=time.monotonic() - t0)


@pytest.fixture
def label_studio(ls_template, tmp_path) -> LabelStudio:
    """A fresh Label Studio (copy of the template data dir) on a free port, stopped after the test."""
    data_dir = tmp_path / "ls-data"
    shutil.copytree(ls_template.data_dir, data_dir)
    ls = LabelStudio(data_dir, tmp_path / "label-studio.log").start()  # a taken port is retried on another
    try:
        yield ls
    finally:
        ls.stop()


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------


@dataclass
class DigitImages:
    base_url: str
    urls: list[str]
    labels: list[str]
    dir: Path
    paths: list[Path]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


N_DIGITS = 200


@pytest.fixture
def digit_images(tmp_path) -> DigitImages:
    """The first 200 scikit-learn digits as 32x32 grayscale PNGs (8x8 values 0..16 scaled to 0..255,
    upscaled 4x nearest), served over HTTP from 127.0.0.1; `.labels[i]` is the class of `.urls[i]`."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "digits"
    folder.mkdir()
    paths = []
    for i in range(N_DIGITS):
        img = np.rint(digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        img = np.repeat(np.repeat(img, 4, axis=0), 4, axis=1)
        path = folder / f"digit_{i:04d}.png"
        Image.fromarray(img).save(path)  # 2-D uint8: mode "L"
        paths.append(path)
    labels = [str(int(y)) for y in digits.target[:N_DIGITS]]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="digit-images", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield DigitImages(base_url=base_url, urls=[f"{base_url}/{p.name}" for p in paths], labels=labels,
                          dir=folder, paths=paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------------------------------------
# Our services: `lsal serve` + `lsal worker` processes, and what a test does with them
# ----------------------------------------------------------------------------------------------------------

E2E_SECRET = "e2e-secret-0123456789"
CHOICES = "".join(f'<Choice value="{d}"/>' for d in range(10))
DIGITS_CONFIG = (f'<View><Image name="image" value="$image"/><Choices name="label" toName="image">{CHOICES}'
                 '</Choices></View>')
FAST_DEFAULTS = {"strategy": {"name": "margin"}, "model": {"name": "logistic", "params": {"committee": 1}},
                 "image_size": 8, "channels": 1, "retrain_every": 10, "min_labels": 10, "holdout_fraction": 0.2}


class Stack:
    """A running backend and worker(s) for one Label Studio and Redis, with the steps tests repeat."""

    def __init__(self, ls: LabelStudio, env: dict[str, str], port: int, tmp_path: Path) -> None:
        from stack.processes import ManagedProcess, lsal_command

        self.ls, self.env, self.tmp_path = ls, env, tmp_path
        self.url = f"http://127.0.0.1:{port}"
        self.model_dir = Path(env["MODEL_DIR"])
        self.project: int | None = None
        self.labels: dict[str, str] = {}
        # the model connection's basic auth in Label Studio: any user with the secret, or BASIC_AUTH_USER/PASS
        self.ml_auth = (env.get("BASIC_AUTH_USER") or "lsal", env.get("BASIC_AUTH_PASS") or env["LSAL_SECRET"])
        self.backend = ManagedProcess("backend", lsal_command("serve", "--host", "127.0.0.1", "--port", str(port),
                                                              "--log-level", "warning"), tmp_path / "backend.log", env)
        self.workers: list = []
        self.retired: list = []  # processes a restart replaced (their logs are checked too)
        self._lsal_command = lsal_command
        self._managed = ManagedProcess

    @property
    def worker(self):
        return self.workers[-1]

    def start_worker(self) -> None:
        n = len(self.workers) + len(self.retired)
        self.workers.append(self._managed(f"worker{n}", self._lsal_command("worker", "--class", "simple"),
                                          self.tmp_path / f"worker{n}.log", self.env).start())

    def stop(self) -> None:
        for proc in (*self.workers, self.backend):
            proc.stop()

    def restart(self, **env: str) -> None:
        """Stop the backend and workers and start them again on the same port with `env` changed."""
        self.stop()
        self.retired += [*self.workers, self.backend]
        self.env = {**self.env, **env}
        n_workers, port = len(self.workers), self.url.rsplit(":", 1)[1]
        self.backend = self._managed("backend", self._lsal_command("serve", "--host", "127.0.0.1", "--port", port,
                                                                   "--log-level", "warning"),
                                     self.tmp_path / f"backend{len(self.retired)}.log", self.env)
        self.backend.start()
        self.workers = []
        for _ in range(n_workers):
            self.start_worker()
        self.backend.wait_http(f"{self.url}/health", timeout=60)

    def logs(self) -> str:
        return "".join(f"\n{p.name} log:\n{p.log_tail()}" for p in (*self.workers, self.backend))

    def lsal(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self._lsal_command(*args), env={**os.environ, **self.env, **env},
                              capture_output=True, text=True, timeout=180)

    def admin(self, path: str, method: str = "GET", json: Any = None) -> Any:
        r = http_request(method, f"{self.url}/admin/projects/{path}", json=json,
                         headers={"X-LSAL-Secret": self.env["LSAL_SECRET"]}, timeout=30)
        assert r.status < 300, f"admin {path}: HTTP {r.status} {r.text[:300]}"
        return r.json()

    def status(self) -> dict:
        return self.admin(f"{self.project}/status")

    def redis(self):
        from redis import Redis

        return Redis.from_url(self.env["REDIS_URL"])

    def wait(self, predicate, timeout: float, what: str, fail_fast: bool = True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fail_fast and self.project is not None and any(
                    (self.status().get(k) or {}).get("status") == "failed"
                    for k in ("last_retrain", "last_rescore", "last_score_new")):
                break  # a job failed (it will be retried later): report it now
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        status = jsonlib.dumps(self.status(), default=str)[:3000] if self.project else ""
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\nstatus: {status}\n"
                             f"queue: {self.registries()}{self.logs()}")

    def registries(self) -> dict[str, list[str]]:
        """Job ids in the RQ queue and its registries (for failure messages)."""
        from redis import Redis
        from rq import Queue
        from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

        q = Queue("lsal", connection=Redis.from_url(self.env["REDIS_URL"]))
        return {"queued": q.job_ids, "started": StartedJobRegistry(queue=q).get_job_ids(),
                "scheduled": ScheduledJobRegistry(queue=q).get_job_ids(),
                "failed": FailedJobRegistry(queue=q).get_job_ids()}

    # -- Label Studio, as an admin and an annotator would use it -------------------------------------------
    def ok(self, response: Response, what: str) -> Any:
        assert 200 <= response.status < 300, f"{what}: HTTP {response.status} {response.text[:500]}"
        return response.json()

    def create_project(self, urls: list[str], title: str = "e2e digits") -> dict[int, str]:
        """A digits project with a task per image URL, connected to this backend; {task id: url}."""
        self._new_project(title)
        self.ok(self.ls.post(f"/api/projects/{self.project}/import", json=[{"image": u} for u in urls]), "import")
        return self._connect()

    def create_project_from_files(self, paths: list[Path], title: str = "uploads") -> dict[int, str]:
        """A project whose images are uploaded into Label Studio (tasks point at /data/upload/...)."""
        import httpx

        self._new_project(title)
        # one form field per file: Label Studio reads request.FILES.items(), one file per field name
        files = [(f"file{i}", (p.name, p.read_bytes(), "image/png")) for i, p in enumerate(paths)]
        r = httpx.post(f"{self.ls.url}/api/projects/{self.project}/import", files=files, headers=self.ls.headers,
                       timeout=120)
        assert r.status_code < 300, f"upload: HTTP {r.status_code} {r.text[:300]}"
        return self._connect()

    def _new_project(self, title: str) -> None:
        self.project = self.ok(self.ls.post("/api/projects/", json={"title": title, "label_config": DIGITS_CONFIG}),
                               "create project")["id"]

    def _connect(self) -> dict[int, str]:
        """Connect the backend as an admin does in Settings -> Model (basic auth = the secret, for Start
        Training); wait for the webhook; {task id: image URL}."""
        ls = self.ls
        tasks = self.ok(ls.get(f"/api/tasks?project={self.project}&page_size=1000"), "tasks")["tasks"]
        self.ml = self.ok(ls.post("/api/ml", json={"project": self.project, "url": self.url, "title": "lsal",
                                                   "auth_method": "BASIC_AUTH", "basic_auth_user": self.ml_auth[0],
                                                   "basic_auth_pass": self.ml_auth[1]}), "connect the ML backend")
        self.wait(lambda: self.status()["webhook_url"] == f"{self.url}/webhook", 60, "the webhook registration")
        return {t["id"]: t["data"]["image"] for t in tasks}

    def next_task(self) -> dict:
        return self.ok(self.ls.get(f"/api/projects/{self.project}/next"), "next task")

    def label(self, task: dict, label: str) -> None:
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
        self.ok(self.ls.post(f"/api/tasks/{task['id']}/annotations/", json={"result": result, "lead_time": 1.0}),
                f"annotate task {task['id']}")

    def label_next(self, n: int, truth: dict[str, str]) -> list[int]:
        """Label `n` tasks in Label Studio's /next order with their true class; their ids."""
        done = []
        for _ in range(n):
            task = self.next_task()
            self.label(task, truth[task["data"]["image"]])
            done.append(task["id"])
        return done

    def direct_order(self, version: str, settings: dict, tasks: dict[int, str], labeled: set[int],
                     images: dict[str, Path]) -> list[int]:
        """Unlabeled task ids in the order the project's strategy gives when run directly on the artifact."""
        import numpy as np

        from core.project_settings import ProjectSettings
        from plugins.images import decode_image, resize
        from plugins.models.artifact import load_artifact
        from plugins.strategies import Input

        artifact = load_artifact(self.model_dir / f"project-{self.project}" / f"{version}.pt")
        cfg = ProjectSettings.model_validate(settings)
        size = cfg.image_size

        def load(urls: list[str]) -> np.ndarray:
            return np.stack([resize(decode_image(images[u].read_bytes(), mode="L"), (size, size))[..., None]
                             for u in urls]) if urls else np.zeros((0, size, size, 1), dtype=np.uint8)

        pool = sorted(t for t in tasks if t not in labeled)
        lab = sorted(labeled)
        truth = {u: i for i, u in enumerate(artifact.label_map)}
        strat = cfg.build_strategy()
        needs = strat.required_inputs() | (strat.optional_inputs() & artifact.model.provides) | {Input.PROBS}
        y_lab = np.asarray([truth[self.labels[tasks[t]]] for t in lab], dtype=np.int64) if lab else np.zeros(0, int)
        inputs = artifact.model.pool_inputs(load([tasks[t] for t in pool]), frozenset(needs),
                                            load([tasks[t] for t in lab]), y_lab)
        return [pool[i] for i in strat.rank(inputs).order]

    def ls_model_version(self) -> str:
        return self.ok(self.ls.get(f"/api/projects/{self.project}"), "project")["model_version"]

    def prediction_counts(self) -> dict[str, int]:
        return self.ok(self.ls.get(f"/api/projects/{self.project}/model-versions/"), "model versions")


@pytest.fixture
def stack_factory(label_studio, redis_url, digit_images, tmp_path):
    """Start a Stack (backend + one worker) with env overrides; stopped by PID after the test, logs checked."""
    from stack.processes import free_port

    stacks: list[Stack] = []

    def make(ls_url: str | None = None, with_token: bool = True, defaults: dict | None = None,
             **env: str) -> Stack:
        base = {"LABEL_STUDIO_URL": ls_url or label_studio.url, "REDIS_URL": redis_url, "LSAL_SECRET": E2E_SECRET,
                "MODEL_DIR": str(tmp_path / "models"), "LSAL_IMAGE_HOSTS": digit_images.base_url.split("//", 1)[1],
                "LSAL_DEFAULTS": jsonlib.dumps(defaults or FAST_DEFAULTS), "OMP_NUM_THREADS": "1",
                "LSAL_RECONCILE_S": "0"}
        if with_token:
            base["LABEL_STUDIO_API_KEY"] = label_studio.token
        stack = Stack(label_studio, {**base, **env}, free_port(), tmp_path)
        stack.labels = dict(zip(digit_images.urls, digit_images.labels))
        stacks.append(stack)
        stack.backend.start()
        stack.start_worker()
        stack.backend.wait_http(f"{stack.url}/health", timeout=60)
        return stack

    yield make
    for stack in stacks:
        stack.stop()
        for proc in (*stack.retired, *stack.workers, stack.backend):
            log = proc.log_tail(10**7)
            assert E2E_SECRET not in log, f"the secret leaked into the {proc.name} log"
            assert label_studio.token not in log, f"the Label Studio token leaked into the {proc.name} log"
