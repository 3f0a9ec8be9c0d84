"""How every job runs: under the project's lock, with its pending marker cleared and its outcome recorded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.queueing import release_pending
from worker.context import JobContext
from worker.locking import project_lock

log = logging.getLogger("lsal.worker")
Body = Callable[[JobContext], dict[str, Any]]


def run_job(project: int, kind: str, body: Body) -> dict[str, Any]:
    """Take the project lock, clear our pending marker, run `body(ctx)`, record the outcome for status."""
    ctx = JobContext.create(project)
    started = time.time()
    with project_lock(ctx.redis, project, wait_s=ctx.settings.job_timeout_s, lease_s=ctx.settings.lock_lease_s) \
            as lease:
        ctx.lease = lease
        locked_at = time.time()
        if ctx.job is not None:
            release_pending(ctx.redis, project, kind, ctx.job.id)
        try:
            result = body(ctx)
        except Exception as exc:  # recorded for `lsal status`, then re-raised for RQ's retry
            ctx.store.set_info(**{f"last_{kind}": {"status": "failed", "error": f"{type(exc).__name__}: "
                                                   f"{exc}"[:500], "at": time.time(),
                                                   "job": ctx.job.id if ctx.job else None}})
            raise
        finished_at = time.time()
    result = {**result, "timings": dict(ctx.timings), "duration_s": round(finished_at - started, 3),
              "locked_at": locked_at, "finished_at": finished_at}
    ctx.store.set_info(**{f"last_{kind}": {**result, "at": time.time(), "job": ctx.job.id if ctx.job else None}})
    log.info("project %s: %s %s in %.1f s", project, kind, result.get("status"), result["duration_s"])
    return result
