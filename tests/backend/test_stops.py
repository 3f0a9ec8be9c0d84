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
