"""The frame of a command that runs the local stack and stops it (the demo, the benchmarks): SIGTERM as
Ctrl-C, everything started stopped by `stack.processes.Stops`, progress lines, and the benchmarks' tables."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stack.processes import Stops

T0 = time.monotonic()


def say(text: str) -> None:
    """A progress line on stderr, stamped with the seconds since this process started."""
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a process died, a setup call failed, time ran out)."""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (so the cleanup runs) while the block runs in the main thread,
    even when this process inherited them ignored (a shell starts background jobs with SIGINT ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def wait_for(check: Callable[[], Any], timeout: float, what: str, alive: Callable[[], None],
             interval: float = 0.5) -> Any:
    """check()'s first truthy value, polled every `interval` s; BenchError after `timeout` s, and whatever
    alive() raises when a process the benchmark started has died."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def pct(values, q: float) -> float:
    """The q-th percentile, NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_main(run: Callable[[argparse.Namespace, Stops, Path], int], args: argparse.Namespace,
             workdir: Path) -> int:
    """Run `run(args, stops, workdir)`; stop everything it started; keep `workdir` only when a check failed
    or `args.workdir` was given.

    Exit codes: run's own (0 ok, 1 a check failed), 2 when it could not run, 130 on Ctrl-C / SIGTERM.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stops = Stops(warn=say)
    code = 2
    try:
        with interruptible():
            code = run(args, stops, workdir)
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    except RuntimeError as exc:  # BenchError, a process that did not start, ...
        say(f"error: {exc}")
        code = 2
    finally:
        say("stopping everything this benchmark started")
        stops.close()
        if args.workdir is None:
            if code == 0:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                say(f"kept {workdir} (logs under logs/)")
    return code
