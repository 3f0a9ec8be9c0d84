"""Reconciliation: compare Label Studio's annotation counts with what was trained, enqueue what is missing.

Label Studio sends each webhook once (1 s timeout, no retry) and Redis can be away for a while; the backend
runs this every LSAL_RECONCILE_S seconds for every project it knows, `lsal reconcile` runs it on demand.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from core.admin import reconcile
from core.tokens import webhook_outdated, webhook_token
from core.config import Settings
from core.credentials import client_for
from core.ls_client import LabelStudioError
from core.queueing import enqueue
from core.store import ProjectStore, known_projects

log = logging.getLogger("lsal.reconcile")


def reconcile_project(settings: Settings, redis: Redis, project: int) -> dict[str, Any]:
    """Reconcile one project against Label Studio's own counters; re-register its webhook after a secret
    rotation (Label Studio would otherwise keep sending the old secret, and every event would be refused)."""
    labeled = client_for(settings, redis, project).project(project).get("num_tasks_with_annotations")
    store = ProjectStore(redis, project)
    out = reconcile(redis, store, settings.defaults, settings.queue, settings.job_timeout_s,
                    labeled if isinstance(labeled, int) else None)
    info = store.info()
    secret = settings.secret.get_secret_value() if settings.secret else None
    target = f"{settings.public_url}/webhook" if settings.public_url else info.get("webhook_url")
    if secret and info.get("webhook_url") and webhook_outdated(info, target, webhook_token(secret, project)):
        out["webhook"] = enqueue(redis, settings.queue, "connect", project, timeout=300,
                                 reason="reconcile: LSAL_SECRET or LSAL_PUBLIC_URL changed").job_id
    return out


def reconcile_all(settings: Settings, redis: Redis) -> list[dict[str, Any]]:
    """Reconcile every known project; a project whose Label Studio is unreachable reports its error."""
    out = []
    for project in known_projects(redis):
        try:
            out.append(reconcile_project(settings, redis, project))
        except LabelStudioError as exc:
            out.append({"project": project, "error": str(exc)})
    return out


class Reconciler(threading.Thread):
    """Background thread of the backend: reconcile_all every `interval_s`, surviving Redis and LS outages."""

    def __init__(self, settings: Settings, redis: Redis, interval_s: float) -> None:
        super().__init__(name="lsal-reconciler", daemon=True)
        self.settings, self.redis, self.interval_s = settings, redis, interval_s
        self.stopped = threading.Event()
        self.runs = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                for result in reconcile_all(self.settings, self.redis):
                    if "retrain" in result or "rescore" in result or "error" in result:
                        log.info("reconcile: %s", result)
            except RedisError as exc:
                log.warning("reconcile skipped: Redis unavailable (%s)", type(exc).__name__)
            self.runs += 1

    def stop(self) -> None:
        self.stopped.set()
