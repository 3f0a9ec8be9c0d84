"""`lsal demo`, the real local stack, run as a user runs it: a subprocess that must print its rounds, stay
up for a person until Ctrl-C (or end after the rounds with --exit), and leave nothing running behind it,
whether it ends by itself, by SIGINT inherited as ignored (a background job of a shell) or by SIGTERM.

The demo's workdir gets a copy of the session's migrated Label Studio data dir (the demo reuses the one in
its workdir, as on a second run), which saves the 30-60 s of migrations.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from stack.demo import DemoError, DemoOptions, run_demo
from stack.processes import lsal_command

ROUND = re.compile(r"^round (\d+): (\d+) labels, model (v\d+), held-out accuracy ([0-9.]+) \((\d+) images\)",
                   re.MULTILINE)
PID = re.compile(r"^(redis-server|Label Studio|lsal serve|lsal worker) +pid (\d+)", re.MULTILINE)
PORT = re.compile(r"127\.0\.0\.1:(\d+)")


@pytest.fixture
def demo_workdir(ls_template, tmp_path) -> Path:
    if shutil.which("redis-server") is None:
        reason = "redis-server binary not found on PATH (apt-get install redis-server)"
        if os.environ.get("LSAL_REQUIRE_E2E"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    workdir = tmp_path / "demo"
    shutil.copytree(ls_template.data_dir, workdir / "label-studio")
    return workdir


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _assert_all_gone(output: str) -> None:
    """Every process group the demo printed is gone, and nothing listens on the ports it printed."""
    pids = {name: int(pid) for name, pid in PID.findall(output)}
    assert set(pids) == {"redis-server", "Label Studio", "lsal serve", "lsal worker"}, output
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):  # its own process group (start_new_session): pgid == pid
            os.killpg(pid, 0)
    for port in {int(p) for p in PORT.findall(output)}:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after the demo"


def test_demo_runs_rounds_on_the_real_stack_and_stops_everything(demo_workdir):
    t0 = time.monotonic()
    out = subprocess.run(lsal_command("demo", "--rounds", "2", "--tasks", "60", "--exit", "--workdir",
                                      str(demo_workdir)), capture_output=True, text=True, timeout=600, env=_env(),
                         check=False)
    output = out.stdout + out.stderr
    assert out.returncode == 0, output
    rounds = ROUND.findall(output)
    assert [(r[0], r[1], r[2]) for r in rounds] == [("1", "10", "v1"), ("2", "20", "v2")], output
    assert all(0.0 <= float(r[3]) <= 1.0 and r[4] == "300" for r in rounds), output
    assert "login: admin@example.com / " in output and "/projects/" in output
    exports = re.search(r"^lsal CLI: +export (.*)$", output, re.MULTILINE)
    assert exports and "REDIS_URL=redis://127.0.0.1:" in exports.group(1) and "LSAL_SECRET=" in exports.group(1)
    _assert_all_gone(output)
    print(f"demo: 2 rounds in {time.monotonic() - t0:.0f} s")


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a job it starts in the background


def test_the_stack_stays_up_until_ctrl_c_even_with_sigint_inherited_ignored_then_everything_stops(demo_workdir):
    """(SIGTERM takes the same path: tests/backend/test_stops.py.)"""
    proc = subprocess.Popen(lsal_command("demo", "--rounds", "1", "--tasks", "30", "--workdir", str(demo_workdir)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            preexec_fn=_sigint_ignored)
    lines: list[str] = []
    up = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "the stack stays up" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(480), "".join(lines)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the demo only; its children have process groups of their own
        assert proc.wait(60) == 130, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    output = "".join(lines)
    assert len(ROUND.findall(output)) == 1, output
    assert "interrupted: everything the demo started is stopped" in output
    _assert_all_gone(output)


def test_bad_options_fail_before_starting_anything(tmp_path):
    from rich.console import Console
    from typer.testing import CliRunner

    from cli.main import app

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found on PATH")
    console = Console(file=open(os.devnull, "w"))  # noqa: SIM115
    fake_ls = tmp_path / "bin" / "label-studio"
    fake_ls.parent.mkdir()
    fake_ls.write_text("")
    workdir = tmp_path / "demo"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DemoError, match=f"port {port} \\(--port\\) is taken"):
            run_demo(DemoOptions(workdir=workdir, port=port, ls_bin=fake_ls), console)
    with pytest.raises(DemoError, match="run .ci/setup-label-studio"):
        run_demo(DemoOptions(workdir=workdir, ls_bin=tmp_path / "nope" / "label-studio"), console)
    with pytest.raises(DemoError, match="more than --tasks"):
        run_demo(DemoOptions(workdir=workdir, tasks=30, rounds=5, batch=10, ls_bin=fake_ls), console)
    with pytest.raises(DemoError, match="bad demo settings"):
        run_demo(DemoOptions(workdir=workdir, strategy="nope", ls_bin=fake_ls), console)
    assert not workdir.exists()  # nothing was started or written

    result = CliRunner().invoke(app, ["demo", "--tasks", "30", "--rounds", "5", "--workdir", str(workdir)])
    assert result.exit_code == 2 and "error:" in result.output, result.output
    result = CliRunner().invoke(app, ["demo", "--strategies", "random"])
    assert result.exit_code == 2 and "only apply with --offline" in result.output, result.output
    result = CliRunner().invoke(app, ["demo", "--offline", "--exit"])
    assert result.exit_code == 2 and "only apply without --offline" in result.output, result.output
