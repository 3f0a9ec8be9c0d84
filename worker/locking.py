"""One job per project at a time: a Redis lock with a short lease that a heartbeat thread keeps extending.

A worker that dies (SIGKILL, lost machine) stops extending it, and the lock frees itself after one lease, so
the next job on that project is never blocked for long. A job whose lease lapsed anyway (Redis away longer
than a lease, a stalled process) has lost the lock: another job may hold it now, so it must not write
anything that counts; `Lease.check` raises LockLostError before every such step (a new version, a publication).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from core.queueing import lock_key

log = logging.getLogger("lsal.worker")


class ProjectBusyError(RuntimeError):
    """Another job held the project's lock for longer than this job was willing to wait."""


class LockLostError(RuntimeError):
    """The job's project lock lapsed while it worked; it stops before writing anything."""


class Lease:
    """The held project lock, as its job sees it: `check()` before writing what only the holder may write."""

    def __init__(self, project: int) -> None:
        self.project = project
        self.lost = threading.Event()
        self.reason = ""

    def lose(self, reason: str) -> None:
        """Mark the lock as lost (the heartbeat found it gone or taken)."""
        self.reason = reason
        self.lost.set()

    def check(self) -> None:
        """Raise LockLostError when the lock is no longer ours."""
        if self.lost.is_set():
            raise LockLostError(f"project {self.project}: the job's lock lapsed ({self.reason}); another job may "
                                "hold it, so this one stops without writing")


@contextmanager
def project_lock(redis: Redis, project: int, wait_s: float, lease_s: float = 30.0) -> Iterator[Lease]:
    """Hold the project's lock for the block, waiting up to `wait_s` for it; yields its Lease."""
    lock = redis.lock(lock_key(project), timeout=lease_s, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire(blocking=True):
        raise ProjectBusyError(f"project {project} stayed locked by another job for {wait_s:.0f} s")
    lease = Lease(project)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lease_s / 3):
            try:
                lock.reacquire()
            except LockNotOwnedError:  # expired (or taken by another job): never ours again
                lease.lose("its lease expired before the heartbeat renewed it")
                log.warning("project %s: the job lost its lock; it stops before its next write", project)
                return
            except RedisError as exc:  # Redis briefly away: try again on the next beat
                log.info("project %s: lock renewal failed (%s); retrying", project, type(exc).__name__)

    beat = threading.Thread(target=heartbeat, name=f"lsal-lock-{project}", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        beat.join()
        if not lease.lost.is_set():
            try:
                lock.release()
            except (LockError, RedisError) as exc:  # expired or Redis gone: the lease ends it anyway
                log.info("project %s: lock release failed (%s); it lapses on its own", project, type(exc).__name__)
