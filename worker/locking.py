"""One job per project at a time: a Redis lock with a short lease that a heartbeat thread keeps extending.

A worker that dies (SIGKILL, lost machine) stops extending it, and the lock frees itself after one lease, so
the next job on that project is never blocked for long.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import LockError, RedisError

from core.queueing import lock_key


class ProjectBusyError(RuntimeError):
    """Another job held the project's lock for longer than this job was willing to wait."""


@contextmanager
def project_lock(redis: Redis, project: int, wait_s: float, lease_s: float = 30.0) -> Iterator[None]:
    """Hold the project's lock for the block, waiting up to `wait_s` for it."""
    lock = redis.lock(lock_key(project), timeout=lease_s, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire(blocking=True):
        raise ProjectBusyError(f"project {project} stayed locked by another job for {wait_s:.0f} s")
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                lock.reacquire()
            except (LockError, RedisError):
                pass  # Redis briefly away: try again on the next beat

    beat = threading.Thread(target=heartbeat, name=f"lsal-lock-{project}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        try:
            lock.release()
        except (LockError, RedisError):
            pass  # expired or Redis gone: the lease ends it anyway
