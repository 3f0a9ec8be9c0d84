"""Local processes for the demo and the end-to-end tests: Redis, Label Studio, our backend and worker.

Each runs in its own process group with its output in a log file, and is stopped by PID (the group), so
Ctrl-C or a failing test leaves nothing behind; and each is sent SIGTERM by the kernel when the process that
started it dies, even by SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LS_BIN = REPO / ".ls-venv" / "bin" / "label-studio"  # installed by .ci/setup-label-studio

# The admin of a local Label Studio (the demo's and the end-to-end tests'). Label Studio applies them when
# it creates the user on an empty data dir; the token is a legacy API token (40 hex), fixed so that a data
# dir can be reused or copied and still be reached.
LOCAL_LS_USERNAME = "admin@example.com"
LOCAL_LS_PASSWORD = "lsal-local-password"
LOCAL_LS_TOKEN = "5e2e0a1b2c3d4e5f60718293a4b5c6d7e8f90123"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def stop_with_parent() -> None:
    """In a child, before exec: the kernel sends it SIGTERM when the process that started it dies (Linux
    PR_SET_PDEATHSIG), so a SIGKILLed demo or test leaves no Label Studio, Redis or worker behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _warn_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Stops:
    """What a command started (the demo, a benchmark), stopped in reverse order by `close`; idempotent, and a
    second Ctrl-C or a SIGTERM cannot cut it short."""

    warn: Callable[[str], None] = _warn_stderr
    items: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def add(self, name: str, stop: Callable[[], None]) -> None:
        """Register how to stop what was just started."""
        self.items.append((name, stop))

    def close(self) -> None:
        """Stop everything registered, newest first; a failing stop is reported and the rest still run."""
        main = threading.current_thread() is threading.main_thread()
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            while self.items:
                name, stop = self.items.pop()
                try:
                    stop()
                except Exception as exc:  # noqa: BLE001 (stop the rest whatever happens)
                    self.warn(f"could not stop {name}: {exc}")
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


@dataclass
class ManagedProcess:
    """A child process in its own process group, logging to a file.

    The environment is ours plus `env`, or only `env` when `inherit_env` is false. `log_tail` reads only
    what this start wrote, so a log file shared by several runs never answers for an earlier one."""

    name: str
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    inherit_env: bool = True
    proc: subprocess.Popen | None = None
    log_offset: int = 0

    def start(self) -> ManagedProcess:
        """Start the process."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.log_offset = log.tell()
        env = {**os.environ, **self.env} if self.inherit_env else dict(self.env)
        try:
            self.proc = subprocess.Popen(self.cmd, env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=stop_with_parent)
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of what this start wrote to the log."""
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(self.log_offset, size - chars))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str, interval: float = 0.3) -> None:
        """Wait until `check()` is true; RuntimeError with the log tail if the process dies or time runs out.
        `check` may raise OSError or httpx.HTTPError to mean "not yet"."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                code = self.proc.returncode if self.proc else "?"
                raise RuntimeError(f"{self.name} exited with {code}; log {self.log_path}:\n{self.log_tail()}")
            try:
                if check():
                    return
            except (OSError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {what} not ready after {timeout:.0f} s; log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            time.sleep(interval)

    def wait_http(self, url: str, timeout: float, ok=lambda r: r.status_code == 200) -> None:
        """Wait until GET `url` satisfies `ok` (see wait_until)."""
        self.wait_until(lambda: ok(httpx.get(url, timeout=2.0)), timeout, url)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout`."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:  # children that outlived the leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


_CALLER_SETTINGS = ("LSAL_", "LABEL_STUDIO_", "HEARTEX_", "BASIC_AUTH_")  # ours are set explicitly


def lsal_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without the caller's lsal / Label Studio settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_CALLER_SETTINGS) and k not in ("REDIS_URL", "MODEL_DIR")}
    return {**env, **extra}


def lsal_command(*args: str) -> list[str]:
    """The `lsal` CLI of this interpreter."""
    return [sys.executable, "-m", "cli.main", *args]


def redis_process(workdir: Path, port: int) -> ManagedProcess:
    """A private redis-server without persistence (wait for it with `wait_for_redis`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    return ManagedProcess("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"],
                          workdir / "redis.log")


def wait_for_redis(process: ManagedProcess, port: int, timeout: float = 15.0) -> None:
    """Wait until the redis-server of `process` answers PING on `port`."""
    import redis

    def ping() -> bool:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1) as probe:
            try:
                return bool(probe.ping())
            except redis.exceptions.RedisError:
                return False

    process.wait_until(ping, timeout, f"PING on port {port}", interval=0.1)


# --------------------------------------------------------------------------------------------------------
# Label Studio
# --------------------------------------------------------------------------------------------------------

LS_SETTINGS_MODULE = "lsal_ls_settings"
_LS_SETTINGS_SOURCE = '''\
"""Label Studio settings for a local lsal stack: the stock ones, with RQ pointed nowhere (written by lsal)."""
# base first: label_studio.py reads django.conf.settings while it is imported, which then sees this
# half-imported module; with base's names in it already, that read works (as with the stock module).
from label_studio.core.settings.base import *  # noqa: F401,F403
from label_studio.core.settings.label_studio import *  # noqa: F401,F403

RQ_QUEUES = {{
    name: {{"UNIX_SOCKET_PATH": {sock!r}, "DB": 0, "DEFAULT_TIMEOUT": 180}}
    for name in ("critical", "high", "default", "low")
}}
'''
_LS_ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


class PortInUseError(RuntimeError):
    """Label Studio found its port taken (it would have moved to the next one on its own)."""


class LabelStudioServer:
    """A local Label Studio (community edition, SQLite in `data_dir`) on 127.0.0.1:`port`, offline.

    * Environment: a minimal one, because Label Studio reads every setting under its bare name as well
      (`PORT`, `HOST`, `DEBUG`, `USERNAME` ... of the caller would leak in). Offline flags (no Sentry, no
      PyPI version check, no analytics); `SSRF_PROTECTION_ENABLED=false` and `ML_BLOCK_LOCAL_IP=false`,
      because the ML backend, its webhook and the images live on 127.0.0.1; `TASK_LOCK_TTL` when given.
    * Settings module: the stock settings with RQ pointed at a unix socket that does not exist. The
      community edition never enqueues jobs (REDIS_ENABLED = False) but still PINGs and reads
      `localhost:6379` at import, and a local stack must not talk to a system Redis.
    * Admin: `username`/`password`/`token` (legacy API token), applied when the data dir is empty; a reused
      data dir keeps the admin it was created with.
    * Start: checks the log for "Port N is in use" (Label Studio would quietly move to N+1) and for
      "Starting development server at http://127.0.0.1:N/", then waits for /health UP. When the port was
      picked here (port=None), a taken port is retried once on another free port.
    * Stop: the whole process group, by PID.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, ls_bin: Path = DEFAULT_LS_BIN,
                 log_path: Path | None = None, state_dir: Path | None = None,
                 username: str = LOCAL_LS_USERNAME, password: str = LOCAL_LS_PASSWORD, token: str = LOCAL_LS_TOKEN,
                 task_lock_ttl: int | None = None, log_level: str = "INFO",
                 extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.ls_bin = Path(ls_bin)
        self._port_given = port is not None
        self.port = port if port is not None else free_port()
        self.state_dir = Path(state_dir) if state_dir else self.data_dir.parent / f"{self.data_dir.name}-run"
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / "label-studio.log"
        self.username, self.password, self.token = username, password, token
        self.task_lock_ttl = task_lock_ttl
        self.log_level = log_level
        self.extra_env = dict(extra_env or {})
        self.process: ManagedProcess | None = None

    # -- where and who ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def installed(self) -> bool:
        return self.ls_bin.is_file()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of what the current (or last) start wrote to the log."""
        if self.process is None:
            return ""
        return self.process.log_tail(chars)

    # -- how ----------------------------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The whole environment Label Studio runs with."""
        env = {k: v for k, v in os.environ.items() if k in _LS_ENV_PASSTHROUGH}
        env.update(
            HOME=str(self.state_dir / "home"),
            PYTHONPATH=str(self.state_dir),
            DJANGO_SETTINGS_MODULE=LS_SETTINGS_MODULE,
            PYTHONUNBUFFERED="1",
            LATEST_VERSION_CHECK="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="", COLLECT_ANALYTICS="false",
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            LABEL_STUDIO_USERNAME=self.username, LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token, LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            ML_BLOCK_LOCAL_IP="false",
            SSRF_PROTECTION_ENABLED="false",  # ML backend, webhooks and images all live on 127.0.0.1
            LOG_LEVEL=self.log_level,
        )
        if self.task_lock_ttl is not None:
            env["TASK_LOCK_TTL"] = str(int(self.task_lock_ttl))
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [str(self.ls_bin), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port),
                "--data-dir", str(self.data_dir), "--username", self.username, "--password", self.password,
                "--user-token", self.token, "--enable-legacy-api-token"]

    def _write_settings(self) -> None:
        (self.state_dir / "home").mkdir(parents=True, exist_ok=True)
        source = _LS_SETTINGS_SOURCE.format(sock=str(self.state_dir / "no-redis.sock"))
        (self.state_dir / f"{LS_SETTINGS_MODULE}.py").write_text(source)

    def start(self, timeout: float = 90.0) -> LabelStudioServer:
        """Start and wait until /health is UP on our port; RuntimeError (with the log tail) otherwise, and
        nothing left running. Migrating an empty data dir takes 25-60 s on 2 cores."""
        if not self.installed:
            raise RuntimeError(f"Label Studio is not installed ({self.ls_bin} is missing): run "
                               ".ci/setup-label-studio")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_settings()
        for attempt in range(1 if self._port_given else 2):
            self.process = ManagedProcess("label-studio", self.command(), self.log_path, self.environment(),
                                          cwd=self.state_dir, inherit_env=False)
            try:
                self.process.start()
                self._wait_ready(timeout)
                return self
            except PortInUseError:
                self.stop()
                if self._port_given or attempt == 1:
                    raise
                self.port = free_port()  # taken between picking and binding: once more elsewhere
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> None:
        started = f"Starting development server at http://127.0.0.1:{self.port}/"
        in_use = f"Port {self.port} is in use"

        def ready() -> bool:
            log = self.process.log_tail(10**6)
            if in_use in log:
                raise PortInUseError(f"port {self.port} is taken; log {self.log_path}:\n{self.log_tail()}")
            if started not in log:  # the line of our port, not of another instance
                return False
            r = httpx.get(self.url + "/health", timeout=2.0)
            try:
                return r.status_code == 200 and r.json().get("status") == "UP"
            except ValueError:
                return False

        self.process.wait_until(ready, timeout, f"/health on port {self.port}", interval=0.25)

    def token_works(self) -> bool:
        """Whether the token authenticates (a reused data dir keeps the admin it was created with)."""
        try:
            r = httpx.get(self.url + "/api/current-user/whoami", headers=self.headers, timeout=10.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the process group (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            self.process.stop(timeout)
