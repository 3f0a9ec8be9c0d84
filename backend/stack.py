"""Local processes for the demo and the end-to-end tests: Redis, Label Studio, our backend and worker.

Each runs in its own process group with its output in a log file, and is stopped by PID (the group), so
Ctrl-C or a failing test leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LS_OFFLINE_ENV = {
    "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "ML_BLOCK_LOCAL_IP": "false",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagedProcess:
    """A child process in its own process group, logging to a file."""

    name: str
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        """Start the process (environment: ours plus `env`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, cwd=self.cwd, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float, ok=lambda r: r.status_code == 200) -> None:
        """Wait until GET `url` satisfies `ok`; RuntimeError with the log tail if the process dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode if self.proc else '?'}:\n"
                                   f"{self.log_tail()}")
            try:
                if ok(httpx.get(url, timeout=2.0)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout:.0f} s:\n{self.log_tail()}")

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


def lsal_command(*args: str) -> list[str]:
    """The `lsal` CLI of this interpreter."""
    return [sys.executable, "-m", "backend.cli", *args]


def redis_process(workdir: Path, port: int) -> ManagedProcess:
    """A private redis-server without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    return ManagedProcess("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(workdir)], workdir / "redis.log")


def label_studio_process(ls_bin: Path, data_dir: Path, port: int, username: str, password: str, token: str,
                         extra_env: dict[str, str] | None = None) -> ManagedProcess:
    """Label Studio on 127.0.0.1:`port` with SQLite in `data_dir`, offline, with a known legacy API token."""
    env = {**LS_OFFLINE_ENV, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LABEL_STUDIO_USERNAME": username,
           "LABEL_STUDIO_PASSWORD": password, "LABEL_STUDIO_USER_TOKEN": token, **(extra_env or {})}
    cmd = [str(ls_bin), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port),
           "--data-dir", str(data_dir)]
    return ManagedProcess("label-studio", cmd, data_dir / "label-studio.log", env)


def label_studio_ready(response: httpx.Response) -> bool:
    """Whether Label Studio's /health says UP."""
    try:
        return response.status_code == 200 and response.json().get("status") == "UP"
    except ValueError:
        return False


