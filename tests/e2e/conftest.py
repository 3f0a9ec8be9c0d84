"""Fixtures for end-to-end tests against a real Label Studio (installed in `.ls-venv` by
`.ci/setup-label-studio`).

* `ls_template` (session): starts Label Studio once on an empty data dir, so the ~40 s of migrations and
  the creation of the admin user, its organization and its API token happen once; then stops it and keeps
  the data dir as a template.
* `label_studio` (function): a copy of the template, a Label Studio process of its own on a free port.
* `digit_images` (function): the first 200 scikit-learn digits as PNG files behind a local HTTP server.

Without `.ls-venv/bin/label-studio` every test here is skipped, unless LSAL_REQUIRE_E2E is set (CI), in
which case they fail.

Label Studio runs with a settings module of ours that only points its RQ connection at a unix socket that
does not exist: the community edition never enqueues jobs (REDIS_ENABLED = False) but still PINGs and
reads `localhost:6379` at import, and these tests must not talk to a system Redis.
"""

from __future__ import annotations

import http.server
import json as jsonlib
import os
import shutil
import signal
import socket
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

REPO = Path(__file__).resolve().parents[2]
LS_BIN = REPO / ".ls-venv" / "bin" / "label-studio"

LS_USERNAME = "admin@example.com"
LS_PASSWORD = "lsal-e2e-password"
LS_TOKEN = "5e2e0a1b2c3d4e5f60718293a4b5c6d7e8f90123"  # fixed 40-hex legacy API token of the admin

TEMPLATE_TIMEOUT_S = float(os.environ.get("LSAL_LS_TEMPLATE_TIMEOUT", 300))  # migrations: 25-40 s on 2 cores
START_TIMEOUT_S = float(os.environ.get("LSAL_LS_START_TIMEOUT", 90))

_SETTINGS_MODULE = "lsal_e2e_ls_settings"
_SETTINGS_SOURCE = '''\
"""Label Studio settings for the lsal end-to-end tests: the stock ones, with RQ pointed nowhere."""
# base first: label_studio.py reads django.conf.settings while it is imported, which then sees this
# half-imported module; with base's names in it already, that read works (as with the stock module).
from label_studio.core.settings.base import *  # noqa: F401,F403
from label_studio.core.settings.label_studio import *  # noqa: F401,F403

RQ_QUEUES = {
    name: {"UNIX_SOCKET_PATH": {sock!r}, "DB": 0, "DEFAULT_TIMEOUT": 180}
    for name in ("critical", "high", "default", "low")
}
'''


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (picked by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _ls_env(data_dir: Path, home: Path, settings_dir: Path) -> dict[str, str]:
    """A minimal environment: nothing of the caller's LABEL_STUDIO_*/HEARTEX_*/PORT/HOST/DEBUG leaks in
    (Label Studio reads every setting under its bare name too)."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")}
    env.update(
        HOME=str(home),
        PYTHONPATH=str(settings_dir),
        DJANGO_SETTINGS_MODULE=_SETTINGS_MODULE,
        PYTHONUNBUFFERED="1",
        LATEST_VERSION_CHECK="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        COLLECT_ANALYTICS="false",
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_USERNAME=LS_USERNAME,
        LABEL_STUDIO_PASSWORD=LS_PASSWORD,
        LABEL_STUDIO_USER_TOKEN=LS_TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        ML_BLOCK_LOCAL_IP="false",
        SSRF_PROTECTION_ENABLED="false",  # ML backends, webhooks and images all live on 127.0.0.1 here
        TASK_LOCK_TTL="1",
        LOG_LEVEL="INFO",
    )
    return env


class LabelStudio:
    """A running Label Studio: `.url`, `.token`, `.headers`, `.log_path`, `.data_dir`, `.port`, and
    `.request(method, path, json=None)` / `.get` / `.post` / `.patch` / `.delete` for its API."""

    def __init__(self, data_dir: Path, settings_dir: Path, log_path: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.settings_dir = Path(settings_dir)
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.token = LS_TOKEN
        self.username = LS_USERNAME
        self.password = LS_PASSWORD
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

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

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        home = self.data_dir.parent / "home"
        home.mkdir(parents=True, exist_ok=True)
        cmd = [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port),
               "--data-dir", str(self.data_dir), "--username", LS_USERNAME, "--password", LS_PASSWORD,
               "--user-token", LS_TOKEN, "--enable-legacy-api-token"]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=str(self.data_dir.parent), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=_ls_env(self.data_dir, home, self.settings_dir),
                                     start_new_session=True)  # own process group: stop() kills it whole
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"Label Studio exited with {code} before it was ready; log "
                                   f"{self.log_path}:\n{self.log_tail()}")
            log = self.log_tail(20000)
            if f"Port {self.port} is in use" in log:  # Label Studio would move to port + 1 on its own
                raise RuntimeError(f"port {self.port} is taken; log {self.log_path}:\n{self.log_tail()}")
            if f"Starting development server at http://127.0.0.1:{self.port}/" in log:  # ours, not another
                try:
                    r = http_request("GET", self.url + "/health", timeout=2)
                    if r.status == 200 and r.json().get("status") == "UP":
                        return
                except (OSError, ValueError):
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Label Studio did not answer /health within {timeout:.0f} s; log "
                                   f"{self.log_path}:\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            try:  # children that outlived the leader, or a leader that ignored SIGTERM
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class LabelStudioTemplate:
    data_dir: Path  # migrated data dir with the admin user, its organization and token
    settings_dir: Path  # holds the settings module (PYTHONPATH)
    migrate_seconds: float


@pytest.fixture(scope="session")
def ls_template(tmp_path_factory) -> LabelStudioTemplate:
    _require_label_studio()
    root = tmp_path_factory.mktemp("ls-template")
    settings_dir = root / "settings"
    settings_dir.mkdir()
    (settings_dir / f"{_SETTINGS_MODULE}.py").write_text(
        _SETTINGS_SOURCE.replace("{sock!r}", repr(str(root / "no-redis.sock"))))
    data_dir = root / "data"
    data_dir.mkdir()
    ls = LabelStudio(data_dir, settings_dir, root / "label-studio.log")
    t0 = time.monotonic()
    ls.start(timeout=TEMPLATE_TIMEOUT_S)
    try:
        r = ls.get("/api/current-user/whoami")
        if r.status != 200 or r.json().get("email") != LS_USERNAME:
            raise RuntimeError(f"the admin token does not authenticate: {r.status} {r.text[:500]}")
    finally:
        ls.stop()
    return LabelStudioTemplate(data_dir=data_dir, settings_dir=settings_dir,
                               migrate_seconds=time.monotonic() - t0)


@pytest.fixture
def label_studio(ls_template, tmp_path) -> LabelStudio:
    """A fresh Label Studio (copy of the template data dir) on a free port, stopped after the test."""
    data_dir = tmp_path / "ls-data"
    shutil.copytree(ls_template.data_dir, data_dir)
    ls = LabelStudio(data_dir, ls_template.settings_dir, tmp_path / "label-studio.log")
    for attempt in range(2):  # the picked port may be taken before Label Studio binds it
        try:
            ls.start()
            break
        except RuntimeError:
            if attempt == 1:
                raise
            ls.port = free_port()
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
    def log_message(self, format, *args):  # noqa: A002
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
