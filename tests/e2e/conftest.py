"""Fixtures for end-to-end tests against a real Label Studio (installed in `.ls-venv` by
`.ci/setup-label-studio`). The harness is the stack's own (`stack/`): Label Studio runs as
`stack.annotator.LabelStudio` (the demo and the benchmarks run it the same way), the steps an admin and an
annotator take are `stack.annotator.Annotator`'s, the images are served by `stack.images.ImageServer` and
the backend's defaults are `stack.settings.FAST_SETTINGS`.

* `ls_template` (session): starts Label Studio once on an empty data dir, so the ~40 s of migrations and
  the creation of the admin user, its organization and its API token happen once; then stops it and keeps
  the data dir as a template.
* `label_studio` (function): a copy of the template, a Label Studio process of its own on a free port.
* `digit_images` (function): the first 200 scikit-learn digits as PNG files behind a local HTTP server.
* `stack_factory` (function): `lsal serve` + `lsal worker` processes for that Label Studio, as a `Stack`.

Without `.ls-venv/bin/label-studio` every test here is skipped, unless LSAL_REQUIRE_E2E is set (CI), in
which case they fail.
"""

from __future__ import annotations

import json as jsonlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stack.annotator import DIGITS_LABEL_CONFIG, Annotator, LabelingInterface, LabelStudio
from stack.digits import write_digits
from stack.http import Client, Response, secret_auth
from stack.images import ImageServer
from stack.processes import DEFAULT_LS_BIN, ManagedProcess, free_port, lsal_command
from stack.settings import FAST_SETTINGS, service_env

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
# Label Studio processes
# ----------------------------------------------------------------------------------------------------------


def _require_label_studio() -> None:
    if LS_BIN.exists():
        return
    reason = f"Label Studio is not installed ({LS_BIN.relative_to(REPO)} missing; run .ci/setup-label-studio)"
    if os.environ.get("LSAL_REQUIRE_E2E"):
        pytest.fail(reason + " and LSAL_REQUIRE_E2E is set", pytrace=False)
    pytest.skip(reason)


def _label_studio(data_dir: Path, log_path: Path) -> LabelStudio:
    return LabelStudio(data_dir, ls_bin=LS_BIN, log_path=log_path, task_lock_ttl=TASK_LOCK_TTL_S)


@dataclass
class LabelStudioTemplate:
    data_dir: Path  # migrated data dir with the admin user, its organization and token
    migrate_seconds: float


@pytest.fixture(scope="session")
def ls_template(tmp_path_factory) -> LabelStudioTemplate:
    _require_label_studio()
    root = tmp_path_factory.mktemp("ls-template")
    ls = _label_studio(root / "data", root / "label-studio.log")
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
    """A fresh Label Studio (copy of the template data dir) on a free port, stopped after the test:
    `.url`, `.token`, `.headers`, `.username`, `.data_dir`, `.log_path`, `.get` / `.post` / `.patch` /
    `.delete` (a `stack.http.Response`) and `.annotator()`."""
    data_dir = tmp_path / "ls-data"
    shutil.copytree(ls_template.data_dir, data_dir)
    ls = _label_studio(data_dir, tmp_path / "label-studio.log").start(START_TIMEOUT_S)  # a taken port is retried
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


N_DIGITS = 200


@pytest.fixture
def digit_images(tmp_path) -> DigitImages:
    """The first 200 scikit-learn digits as 32x32 grayscale PNGs (8x8 values 0..16 scaled to 0..255,
    upscaled 4x nearest), served over HTTP from 127.0.0.1; `.labels[i]` is the class of `.urls[i]`."""
    folder = tmp_path / "digits"
    paths, labels = write_digits(folder, range(N_DIGITS))
    with ImageServer(folder) as server:
        yield DigitImages(base_url=server.base_url, urls=server.urls(paths), labels=labels, dir=folder, paths=paths)


# ----------------------------------------------------------------------------------------------------------
# Our services: `lsal serve` + `lsal worker` processes, and what a test does with them
# ----------------------------------------------------------------------------------------------------------

E2E_SECRET = "e2e-secret-0123456789"
DIGITS_CONFIG = DIGITS_LABEL_CONFIG


class Stack:
    """A running backend and worker(s) for one Label Studio and Redis, with the steps tests repeat.

    Label Studio steps go through `self.annotator` (`stack.annotator.Annotator`); `create_project` takes any
    Choices-over-Image `label_config`, whose names `label` / `label_choices` then use (`self.interface`)."""

    def __init__(self, ls: LabelStudio, env: dict[str, str], port: int, tmp_path: Path) -> None:
        self.ls, self.env, self.tmp_path = ls, env, tmp_path
        self.url = f"http://127.0.0.1:{port}"
        self.model_dir = Path(env["MODEL_DIR"])
        self.project: int | None = None
        self.labels: dict[str, str] = {}
        self.interface = LabelingInterface.parse(DIGITS_CONFIG)
        self.ml: dict[str, Any] = {}
        # the model connection's basic auth in Label Studio: any user with the secret, or BASIC_AUTH_USER/PASS
        self.ml_auth = (env.get("BASIC_AUTH_USER") or "lsal", env.get("BASIC_AUTH_PASS") or env["LSAL_SECRET"])
        self.backend = self._backend_process("backend.log")
        self.workers: list[ManagedProcess] = []
        self.retired: list[ManagedProcess] = []  # processes a restart replaced (their logs are checked too)

    @property
    def annotator(self) -> Annotator:
        """Label Studio's REST API as its admin (failed steps raise AssertionError)."""
        return self.ls.annotator(error=AssertionError)

    @property
    def worker(self) -> ManagedProcess:
        return self.workers[-1]

    def _backend_process(self, log: str) -> ManagedProcess:
        port = self.url.rsplit(":", 1)[1]
        return ManagedProcess("backend", lsal_command("serve", "--host", "127.0.0.1", "--port", port,
                                                      "--log-level", "warning"), self.tmp_path / log, self.env)

    def start_worker(self) -> None:
        n = len(self.workers) + len(self.retired)
        self.workers.append(ManagedProcess(f"worker{n}", lsal_command("worker", "--class", "simple"),
                                           self.tmp_path / f"worker{n}.log", self.env).start())

    def stop(self) -> None:
        for proc in (*self.workers, self.backend):
            proc.stop()

    def restart(self, **env: str) -> None:
        """Stop the backend and workers and start them again on the same port with `env` changed."""
        self.stop()
        self.retired += [*self.workers, self.backend]
        self.env = {**self.env, **env}
        n_workers = len(self.workers)
        self.backend = self._backend_process(f"backend{len(self.retired)}.log")
        self.backend.start()
        self.workers = []
        for _ in range(n_workers):
            self.start_worker()
        self.backend.wait_http(f"{self.url}/health", timeout=60)

    def logs(self) -> str:
        return "".join(f"\n{p.name} log:\n{p.log_tail()}" for p in (*self.workers, self.backend))

    def lsal(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(lsal_command(*args), env={**os.environ, **self.env, **env},
                              capture_output=True, text=True, timeout=180)

    def admin(self, path: str, method: str = "GET", json: Any = None) -> Any:
        r = Client(self.url, secret_auth(self.env["LSAL_SECRET"]), timeout=30).request(
            method, f"/admin/projects/{path}", json=json)
        assert r.ok, f"admin {path}: HTTP {r.status} {r.text[:300]}"
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
        return response.expect(what, error=AssertionError)

    def create_project(self, urls: list[str], title: str = "e2e digits",
                       label_config: str = DIGITS_CONFIG) -> dict[int, str]:
        """A project (`label_config`: digits by default) with a task per image URL, connected to this
        backend; {task id: url}."""
        self.new_project(title, label_config)
        self.annotator.import_urls(self.project, urls, self.interface.data_key)
        return self.connect()

    def create_project_from_files(self, paths: list[Path], title: str = "uploads",
                                  label_config: str = DIGITS_CONFIG) -> dict[int, str]:
        """A project whose images are uploaded into Label Studio (tasks point at /data/upload/...)."""
        self.new_project(title, label_config)
        self.annotator.upload(self.project, paths)
        return self.connect()

    def new_project(self, title: str, label_config: str = DIGITS_CONFIG) -> int:
        """An empty project, not connected yet; its id (also `self.project`)."""
        self.interface = LabelingInterface.parse(label_config)
        self.project = self.annotator.create_project(title, label_config)
        return self.project

    def connect(self) -> dict[int, str]:
        """Connect the backend as an admin does in Settings -> Model (basic auth = the secret, for Start
        Training); wait for the webhook; {task id: image URL}."""
        tasks = self.annotator.tasks(self.project)
        self.ml = self.annotator.connect_ml_backend(self.project, self.url, *self.ml_auth)
        self.wait(lambda: self.status()["webhook_url"] == f"{self.url}/webhook", 60, "the webhook registration")
        return {t["id"]: t["data"][self.interface.data_key] for t in tasks}

    def first_of_order_is_next(self, timeout: float = 180) -> dict:
        """Wait for the current version's publication, check that /next serves its first-ranked task; the
        status."""
        status = self.wait(lambda: (s := self.status())["published"] and
                           s["published"]["version"] == s["current_version"] and s, timeout, "a publication")
        assert self.next_task()["id"] == status["published"]["top"][0]  # Label Studio serves the first-ranked
        return status

    def next_task(self) -> dict:
        task = self.annotator.next_task(self.project)
        assert task is not None, "next task: Label Studio has no task left to label"
        return task

    def label(self, task: dict, label: str | Sequence[str]) -> dict:
        """Annotate `task` with one choice, or several (a list: a multi-label project); the annotation."""
        return self.annotator.annotate(task, label, self.interface)

    def label_choices(self, task: dict, choices: Sequence[str]) -> dict:
        """Annotate `task` ticking every one of `choices` (a multi-label project); the annotation."""
        return self.label(task, list(choices))

    def label_next(self, n: int, truth: dict[str, str | Sequence[str]]) -> list[int]:
        """Label `n` tasks in Label Studio's /next order with their true class (or classes); their ids."""
        done = []
        for _ in range(n):
            task = self.next_task()
            self.label(task, truth[task["data"][self.interface.data_key]])
            done.append(task["id"])
        return done

    def predictions(self, task: int | dict) -> list[dict]:
        """Label Studio's predictions of one task (every model version)."""
        return self.annotator.predictions(task["id"] if isinstance(task, dict) else task)

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
        return self.annotator.model_version(self.project)

    def prediction_counts(self) -> dict[str, int]:
        return self.annotator.model_versions(self.project)


@pytest.fixture
def stack_factory(label_studio, redis_url, digit_images, tmp_path):
    """Start a Stack (backend + one worker) with env overrides (`defaults`: the projects' settings,
    FAST_SETTINGS unless given); stopped by PID after the test, logs checked."""
    stacks: list[Stack] = []

    def make(ls_url: str | None = None, with_token: bool = True, defaults: dict | None = None,
             **env: str) -> Stack:
        base = service_env(label_studio_url=ls_url or label_studio.url, redis_url=redis_url, secret=E2E_SECRET,
                           model_dir=tmp_path / "models", image_hosts=digit_images.base_url.split("//", 1)[1],
                           defaults=defaults or FAST_SETTINGS, token=label_studio.token if with_token else None,
                           OMP_NUM_THREADS="1", LSAL_RECONCILE_S="0")
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
