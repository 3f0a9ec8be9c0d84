"""`lsal demo`: the whole product on this machine, driven by a simulated annotator, then left up for a person.

It starts a private redis-server, Label Studio (from `.ls-venv`), `lsal serve` and one `lsal worker`; draws
synthetic surface images (128 px, scratch / stain / dent defects, about a third defect-free; more of them,
from other textures, are held out as a test set) and uploads them into a new Label Studio project, as a
user uploads files, so Label Studio serves them itself; connects the backend as an admin would. The project
has `task_fields` on: each publication writes the model's reasons into the tasks (shown on the labeling
page through `$lsal_reason`, and as columns of the "lsal priority" Data Manager tab). Then an annotator who
knows the truth labels in Label Studio's order (`/next`), one batch per round; after each round the worker
retrains and publishes a new order, and the demo prints the served model's accuracy on the held-out images
and the head of the new order. Unless `keep_running` is off, the stack then stays up until Ctrl-C.

Everything it starts runs in a process group of its own, is stopped by PID when the demo ends, fails or is
interrupted (SIGINT, SIGTERM: handled even when the demo inherited them ignored), and is told to stop by the
kernel if the demo itself is killed. The Label Studio data dir under `--workdir` is kept between runs, so
its migrations (30-60 s) happen once; each run creates a fresh project.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from stack.annotator import Annotator, LabelingInterface, LabelStudio, choices_config
from stack.defects import DefectClasses, prepare_defect_classes
from stack.http import Client, secret_auth
from stack.processes import (
    DEFAULT_LS_BIN,
    ManagedProcess,
    Stops,
    free_port,
    lsal_command,
    lsal_env,
    port_is_free,
    redis_process,
    wait_for_redis,
)
from stack.runs import interruptible
from stack.settings import service_env

MAX_TASKS = 2000
N_TEST = 300  # held-out images (other textures) the demo measures each version on
DEMO_CLASSES = ("normal", "scratch", "stain", "dent")
# what an annotator sees: the model's reasons (written by the worker: task_fields), the image, the choices
DEMO_CONFIG = choices_config(DEMO_CLASSES, inline=True).replace(
    "<View>", '<View><Header value="$lsal_reason" size="6"/>', 1)
ML_USER = "lsal"  # the basic-auth user of the ML backend connection; the password is LSAL_SECRET
TASK_LOCK_TTL_S = 30  # a task handed out but not labeled returns to the order after this long


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why (with a log tail where one helps)."""


@dataclass
class DemoOptions:
    workdir: Path = Path("lsal-data/demo")
    tasks: int = 200
    rounds: int = 5
    batch: int = 10
    strategy: str = "margin"
    port: int | None = None  # of `lsal serve`; a free one when None
    ls_port: int | None = None  # of Label Studio; a free one when None
    keep_running: bool = True
    ls_bin: Path = DEFAULT_LS_BIN
    round_timeout_s: float = 300.0
    seed: int = 0

    def defaults(self) -> dict[str, Any]:
        """LSAL_DEFAULTS: the settings of the demo project (a small CNN on 32 px RGB, about 10 s a retrain on
        2 cores; the model's reasons written into the tasks)."""
        return {"strategy": {"name": self.strategy}, "model": {"name": "cnn", "params": {"train": {"epochs": 10}}},
                "image_size": 32, "channels": 3, "retrain_every": self.batch, "min_labels": min(10, self.batch),
                "holdout_fraction": 0.2, "task_fields": True}


# --------------------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------------------


def _token_from_db(data_dir: Path, username: str) -> str | None:
    """The API token of `username` in Label Studio's SQLite database, if any."""
    path = data_dir / "label_studio.sqlite3"
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT t.key FROM authtoken_token t JOIN htx_user u ON u.id = t.user_id "
                             "WHERE u.email = ?", (username,)).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


class Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.o = options
        self.console = console
        self.workdir = options.workdir.resolve()
        self.logs = self.workdir / "logs"
        self.model_dir = self.workdir / "models"
        self.secret = secrets.token_hex(16)
        self.stack = Stops(warn=lambda text: console.print(f"[yellow]{text}[/yellow]"))
        self.ls: LabelStudio | None = None
        self.backend: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None
        self.backend_url = ""
        self.redis_url = ""
        self.service_env: dict[str, str] = {}
        self.project = 0
        self.interface = LabelingInterface.parse(DEMO_CONFIG)

    # -- output -------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[Callable[[str], None]]:
        """A spinner on a terminal (its text updatable); a plain line otherwise."""
        if self.console.is_terminal:
            with self.console.status(text) as status:
                yield lambda t: status.update(t)
        else:
            self.say(text)
            yield lambda t: None

    # -- checks -------------------------------------------------------------------------------------------
    def check(self) -> None:
        from pydantic import ValidationError

        from core.project_settings import ProjectSettings
        from plugins.models import build_model

        o = self.o
        if not Path(o.ls_bin).is_file():
            raise DemoError(f"Label Studio is not installed ({o.ls_bin} is missing): run .ci/setup-label-studio "
                            "(or `lsal demo --offline` for the simulation without Label Studio)")
        if shutil.which("redis-server") is None:
            raise DemoError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server); "
                            "`lsal demo --offline` runs the simulation without it")
        if not 1 <= o.tasks <= MAX_TASKS:
            raise DemoError(f"--tasks must be between 1 and {MAX_TASKS}")
        if o.rounds * o.batch > o.tasks:
            raise DemoError(f"--rounds x --batch = {o.rounds * o.batch} labels, more than --tasks {o.tasks}")
        try:
            settings = ProjectSettings.model_validate(o.defaults())
            strategy = settings.build_strategy()
        except (ValidationError, ValueError) as exc:
            raise DemoError(f"bad demo settings: {exc}") from None
        model = build_model(settings.model.name, len(DEMO_CLASSES), **settings.model_params())
        missing = model.unsupported(strategy.required_inputs())
        if missing:
            raise DemoError(f"bad demo settings: strategy {o.strategy} needs {', '.join(sorted(missing))}, which the "
                            f"demo's {settings.model.name} model does not provide")
        for name, port in (("--port", o.port), ("--ls-port", o.ls_port)):
            if port is not None and not port_is_free(port):
                raise DemoError(f"port {port} ({name}) is taken on 127.0.0.1: choose another or leave it out")

    # -- start --------------------------------------------------------------------------------------------
    def start(self) -> DefectClasses:
        o = self.o
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.model_dir, ignore_errors=True)  # Redis starts empty: old versions mean nothing

        with self.waiting(f"drawing {o.tasks} + {N_TEST} surface images (128 px PNG)"):
            data = prepare_defect_classes(self.workdir / "images", o.tasks, N_TEST, image_size=32, seed=o.seed)

        redis_port = free_port()
        (self.workdir / "redis").mkdir(exist_ok=True)
        redis = redis_process(self.workdir / "redis", redis_port)
        redis.log_path = self.logs / "redis.log"
        self.stack.add("redis-server", redis.stop)
        redis.start()
        try:
            wait_for_redis(redis, redis_port)
        except RuntimeError as exc:
            raise DemoError(f"redis-server did not start: {exc}") from None
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.say(f"redis-server   pid {redis.pid}  {self.redis_url} (private, no persistence)")

        data_dir = self.workdir / "label-studio"
        fresh = not (data_dir / "label_studio.sqlite3").exists()
        ls = LabelStudio(data_dir, port=o.ls_port, ls_bin=o.ls_bin, log_path=self.logs / "label-studio.log",
                         task_lock_ttl=TASK_LOCK_TTL_S, log_level="WARNING")
        self.ls = ls
        self.stack.add("Label Studio", ls.stop)
        what = ("starting Label Studio; first run in this workdir: migrating its database (30-60 s)" if fresh
                else "starting Label Studio")
        with self.waiting(what):
            try:
                ls.start(timeout=600 if fresh else 180)
            except RuntimeError as exc:
                raise DemoError(f"Label Studio did not start: {exc}") from None
        self._check_token(ls)
        self.say(f"Label Studio   pid {ls.pid}  {ls.url} (data: {data_dir}, log: {ls.log_path})")

        port = o.port or free_port()
        self.backend_url = f"http://127.0.0.1:{port}"
        self.service_env = service_env(label_studio_url=ls.url, token=ls.token, redis_url=self.redis_url,
                                       secret=self.secret, model_dir=self.model_dir, image_hosts="",
                                       defaults=self.o.defaults(), OMP_NUM_THREADS="1")
        # one torch thread: Label Studio, the backend and the worker share the cores (with two threads the
        # worker's training ran 3.5x slower on a busy 2-core machine)
        env = lsal_env(self.service_env)
        self.backend = ManagedProcess("lsal serve", lsal_command("serve", "--host", "127.0.0.1", "--port", str(port),
                                                                 "--log-level", "warning"),
                                      self.logs / "backend.log", env, inherit_env=False)
        self.worker = ManagedProcess("lsal worker", lsal_command("worker", "--class", "simple"),
                                     self.logs / "worker.log", env, inherit_env=False)
        self.stack.add("lsal serve", self.backend.stop)
        self.stack.add("lsal worker", self.worker.stop)
        self.backend.start()
        self.worker.start()
        with self.waiting("starting the backend and the worker"):
            try:
                self.backend.wait_http(f"{self.backend_url}/health", timeout=180)
                self.worker.wait_until(lambda: self._workers(redis_port) > 0, 180, "worker registration")
            except RuntimeError as exc:
                raise DemoError(str(exc)) from None
        self.say(f"lsal serve     pid {self.backend.pid}  {self.backend_url} (log: {self.backend.log_path})")
        self.say(f"lsal worker    pid {self.worker.pid}  (log: {self.worker.log_path})")
        return data

    @staticmethod
    def _workers(redis_port: int) -> int:
        from redis import Redis
        from rq import Worker

        with Redis(host="127.0.0.1", port=redis_port, socket_timeout=2) as r:
            return Worker.count(connection=r)

    def _check_token(self, ls: LabelStudio) -> None:
        """The demo token works on a data dir this demo created; on one created otherwise, the admin's own
        token is read from the database."""
        if ls.token_works():
            return
        token = _token_from_db(ls.data_dir, ls.username)
        if token and token != ls.token:
            ls.token = token
            if ls.token_works():
                return
        raise DemoError(f"Label Studio refuses the demo's API token: {ls.data_dir} was not created by `lsal demo` "
                        "(or its legacy API tokens are off). Remove that folder or choose another --workdir.")

    # -- the project --------------------------------------------------------------------------------------
    def create_project(self, data: DefectClasses) -> tuple[Annotator, Client, dict[int, str]]:
        ls, o = self.ls, self.o
        api = ls.annotator(error=DemoError)
        admin = Client(self.backend_url, secret_auth(self.secret), name="the lsal backend", error=DemoError)
        title = f"lsal demo {datetime.now():%Y-%m-%d %H:%M:%S}"
        self.project = api.create_project(title, DEMO_CONFIG,
                                          f"synthetic surfaces with scratch / stain / dent defects; strategy "
                                          f"{o.strategy}; created by `lsal demo`")
        with self.waiting(f"uploading {len(data.files)} images into Label Studio"):
            api.upload(self.project, data.files)
        truth = {p.name: label for p, label in zip(data.files, data.labels)}
        # Label Studio keeps an upload as /data/upload/<project>/<8 hex>-<file name>
        tasks = {t["id"]: truth.get(t["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[-1])
                 for t in api.tasks(self.project)}
        if len(tasks) != len(truth) or None in tasks.values():
            raise DemoError(f"Label Studio lists {len(tasks)} tasks for the {len(truth)} uploaded images")

        # connect the backend as an admin does in Settings -> Model (basic auth: Start Training works too)
        api.connect_ml_backend(self.project, self.backend_url, ML_USER, self.secret)
        hook = f"{self.backend_url}/webhook"
        with self.waiting("waiting for the backend to register its webhook"):
            self._wait(lambda status: status["webhook_url"] == hook, 120, "the webhook registration", admin)
        return api, admin, tasks

    def _status(self, admin: Client) -> dict[str, Any]:
        return admin.call("GET", f"/admin/projects/{self.project}/status", "read the project status")

    def _alive(self) -> None:
        for proc in (self.backend, self.worker, self.ls.process if self.ls else None):
            if proc is not None and not proc.running:
                code = proc.proc.returncode if proc.proc else "?"
                raise DemoError(f"{proc.name} exited with {code}; log {proc.log_path}:\n{proc.log_tail()}")

    def _wait(self, predicate: Callable[[dict], Any], timeout: float, what: str, admin: Client,
              progress: Callable[[dict], None] | None = None) -> Any:
        """Poll the project status until `predicate(status)` is truthy; DemoError when a process died, a job
        failed or time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            self._alive()
            status = self._status(admin)
            if status["queue"]["failed"]:
                last = status["queue"].get("last_failed") or {}
                raise DemoError(f"a worker job failed ({last.get('id')}: {' '.join(last.get('error') or [])}); "
                                f"log {self.worker.log_path}:\n{self.worker.log_tail()}")
            value = predicate(status)
            if value:
                return value
            if progress is not None:
                progress(status)
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}; worker log "
                                f"{self.worker.log_path}:\n{self.worker.log_tail()}")
            time.sleep(0.5)

    # -- rounds -------------------------------------------------------------------------------------------
    def accuracy(self, version: str, data: DefectClasses) -> float:
        from core.model_cache import artifact_path
        from plugins.models.artifact import load_artifact

        artifact = load_artifact(artifact_path(self.model_dir, self.project, version))
        probs = artifact.model.predict_proba(data.test_x)
        predicted = np.asarray(artifact.label_map)[probs.argmax(axis=1)]
        return float(np.mean(predicted == np.asarray(data.classes)[data.test_y]))

    def label(self, api: Annotator, truth: dict[int, str], count: int) -> int:
        """Label up to `count` tasks in Label Studio's order; how many were labeled."""
        done = 0
        for _ in range(count):
            task = api.next_task(self.project)
            if task is None:  # nothing left to label
                break
            api.annotate(task, truth[task["id"]], self.interface, lead_time=2.0)
            done += 1
        return done

    def _wait_for_publication(self, admin: Client, what: str, previous: str | None) -> str:
        """Wait until the worker published a version other than `previous`; that version."""
        t0 = time.monotonic()
        text = f"{what}; waiting for the worker to retrain and publish"
        with self.waiting(text) as update:

            def progress(status: dict) -> None:
                queue = status["queue"]
                phase = ", ".join(f"{j.get('kind', 'job')}: {j.get('phase', '...')}" for j in queue["running"]) \
                    or ", ".join(queue["pending"]) or "queued"
                update(f"{text} ({phase}, {time.monotonic() - t0:.0f} s)")

            def new_version(status: dict) -> str | None:
                version = (status.get("published") or {}).get("version")
                return version if version and version != previous else None

            return self._wait(new_version, self.o.round_timeout_s, f"a new version ({what})", admin, progress)

    def run_rounds(self, api: Annotator, admin: Client, truth: dict[int, str], data: DefectClasses) -> list[dict]:
        o = self.o
        labels, results = 0, []
        published = (self._status(admin).get("published") or {}).get("version")
        for number in range(1, o.rounds + 1):
            added = self.label(api, truth, o.batch)
            labels += added
            if not added:
                self.say("no unlabeled tasks left")
                break
            t0 = time.monotonic()
            published = self._wait_for_publication(admin, f"round {number}: {labels} labels", published)
            accuracy = self.accuracy(published, data)
            head = admin.call("GET", f"/admin/projects/{self.project}/ranking", "read the ranking",
                              params={"limit": 5})["head"]
            order = ", ".join(str(h["task"]) for h in head)
            self.say(f"round {number}: {labels} labels, model {published}, held-out accuracy {accuracy:.3f} "
                     f"({len(data.test_y)} images), retrain + publish {time.monotonic() - t0:.1f} s; next in order: "
                     f"tasks {order}")
            results.append({"round": number, "labels": labels, "version": published, "accuracy": accuracy,
                            "order": [h["task"] for h in head]})
        return results

    # -- all of it ---------------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        self.check()
        self.say(f"lsal demo: Label Studio + lsal serve + lsal worker on 127.0.0.1, workdir {self.workdir}")
        try:
            with interruptible():
                data = self.start()
                api, admin, truth = self.create_project(data)
                ls = self.ls
                self.say(f"Label Studio: {ls.url}  login: {ls.username} / {ls.password}")
                self.say(f"project:      {ls.url}/projects/{self.project}/data  ({len(truth)} surface images; "
                         f"strategy {self.o.strategy}; held out: {len(data.test_y)}; Data Manager tab "
                         "\"lsal priority\" lists them in the model's order)")
                self.say(f"lsal CLI:     {self.cli_exports()}")
                self.say(f"simulated annotator: {self.o.rounds} rounds of {self.o.batch} labels in Label Studio's "
                         "order (/next)")
                results = self.run_rounds(api, admin, truth, data)
                if len(results) > 1:
                    first, last = results[0], results[-1]
                    self.say(f"held-out accuracy {first['accuracy']:.3f} with {first['labels']} labels -> "
                             f"{last['accuracy']:.3f} with {last['labels']} labels")
                if self.o.keep_running:
                    self.keep_running()
                return results
        finally:
            if self.stack.items:
                self.say("stopping everything the demo started")
            self.stack.close()

    def cli_exports(self) -> str:
        """A shell line that points the `lsal` CLI (status, strategy, review ...) at this demo's stack."""
        keys = ("REDIS_URL", "LSAL_SECRET", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "MODEL_DIR", "LSAL_DEFAULTS")
        pairs = [f"{k}={shlex.quote(self.service_env[k])}" for k in keys if k in self.service_env]
        return f"export {' '.join(pairs)} LSAL_URL={shlex.quote(self.backend_url)}"

    def keep_running(self) -> None:
        ls = self.ls
        self.say(f"the stack stays up: label in Label Studio at {ls.url}/projects/{self.project}/data "
                 f"(login {ls.username} / {ls.password}); every {self.o.batch} labels retrain the model and "
                 "reorder the tasks. Ctrl-C stops everything.")
        while True:
            self._alive()
            time.sleep(1.0)


def run_demo(options: DemoOptions, console: Console) -> list[dict]:
    """Run the full local demo (see the module doc); DemoError when it cannot, KeyboardInterrupt when
    interrupted; everything started is stopped in every case."""
    return Demo(options, console).run()
