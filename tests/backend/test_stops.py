"""Stops: what the demo and the benchmarks started is stopped newest first, whatever fails or interrupts."""

from __future__ import annotations

import signal

from stack.processes import Stops


def test_stops_run_newest_first_a_failure_is_reported_and_the_rest_still_stop() -> None:
    done: list[str] = []
    warnings: list[str] = []

    def fail() -> None:
        done.append("redis")
        raise RuntimeError("already gone")

    stops = Stops(warn=warnings.append)
    stops.add("redis", fail)
    stops.add("label studio", lambda: done.append("label studio"))
    stops.add("worker", lambda: done.append("worker"))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stops.close()
    assert done == ["worker", "label studio", "redis"]
    assert warnings == ["could not stop redis: already gone"]
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # restored after the cleanup
    stops.close()  # idempotent: nothing runs twice
    assert done == ["worker", "label studio", "redis"]


def test_a_signal_during_close_does_not_cut_the_cleanup_short() -> None:
    done: list[str] = []
    stops = Stops(warn=done.append)
    stops.add("first", lambda: done.append("first"))
    stops.add("interrupting", lambda: (signal.raise_signal(signal.SIGINT), done.append("after SIGINT")))
    stops.close()  # SIGINT is ignored while stopping: no KeyboardInterrupt, the next stop runs
    assert done == ["after SIGINT", "first"]


_INTERRUPTIBLE = """
import signal, sys, time
from stack.runs import interruptible
with interruptible():
    try:
        print("ready", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        print("cleaned up", flush=True)
        sys.exit(130)
"""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a job it starts in the background


def _python(code: str, **kw):
    import subprocess
    import sys

    from stack.processes import REPO

    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True, **kw)


def test_sigint_and_sigterm_interrupt_even_when_sigint_was_inherited_ignored() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = _python(_INTERRUPTIBLE, preexec_fn=_ignore_sigint)
        try:
            assert proc.stdout.readline().strip() == "ready"
            proc.send_signal(sig)
            assert proc.wait(20) == 130, sig
            assert proc.stdout.read().strip() == "cleaned up"
        finally:
            proc.kill()
            proc.wait()


_STARTER = """
import sys, time
from pathlib import Path
from stack.processes import ManagedProcess
child = ManagedProcess("sleeper", ["sleep", "120"], Path(sys.argv[1])).start()
print(child.pid, flush=True)
time.sleep(120)
"""


def test_children_are_stopped_when_the_process_that_started_them_is_killed(tmp_path) -> None:
    import os
    import time

    proc = _python(_STARTER.replace("sys.argv[1]", repr(str(tmp_path / "sleeper.log"))))
    child = int(proc.stdout.readline())
    try:
        proc.kill()  # SIGKILL: no cleanup code of the parent runs
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            try:
                with open(f"/proc/{child}/stat") as f:  # reaped late in a container: a zombie counts as gone
                    if f.read().split()[2] == "Z":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"child {child} still runs after its parent was killed")
    finally:
        try:
            os.killpg(child, 9)
        except (ProcessLookupError, PermissionError):
            pass
