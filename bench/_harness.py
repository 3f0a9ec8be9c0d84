"""What the standalone benchmarks share: progress lines, stopping what they started, tables, `main`'s frame."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stack.processes import Stops

T0 = time.monotonic()


def say(text: str) -> None:
    """A progress line on stderr, stamped with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a process died, a setup call failed, time ran out)."""


def _sigterm(signum, frame):
    raise KeyboardInterrupt


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
    """Run `run(args, stops, workdir)`; stop everything it started; keep `workdir` only when a check failed.

    Exit codes: run's own (0 ok, 1 a check failed), 2 when it could not run, 130 on Ctrl-C / SIGTERM.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stops = Stops(warn=say)
    old = signal.signal(signal.SIGTERM, _sigterm)
    code = 2
    try:
        code = run(args, stops, workdir)
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    except (BenchError, RuntimeError) as exc:
        say(f"error: {exc}")
        code = 2
    finally:
        say("stopping everything this benchmark started")
        stops.close()
        signal.signal(signal.SIGTERM, old)
        if args.workdir is None:
            if code == 0:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                say(f"kept {workdir} (logs under logs/)")
    return code
