"""Enqueueing worker jobs, coalesced per project: at most one pending job of each kind per project.

A webhook storm becomes one pending retrain: the first event enqueues it and records its id under
``lsal:p:<project>:pending:<kind>``; later events find that key and add nothing. The job clears the key when
it starts (after taking the project lock), so events that arrive while it runs enqueue the next one, and the
next one reads every annotation Label Studio holds when it starts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from redis import Redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

# job functions by import path: the backend enqueues them without importing the worker
JOBS = {
    "retrain": "worker.jobs.retrain",
    "rescore": "worker.jobs.rescore",
    "score_new": "worker.jobs.score_new_tasks",
    "connect": "worker.jobs.connect",
    "review": "worker.jobs.review",
}
# a failed job (Label Studio down, a worker killed mid-job: RQ re-runs abandoned jobs) runs again after these
RETRY_INTERVALS_S = (10, 60, 300)
_DONE = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


@dataclass(frozen=True)
class Enqueued:
    """The job that will do the work, and whether this call created it (False: coalesced into a pending one)."""

    job_id: str
    created: bool


# job arguments and results are JSON in Redis, never pickles: whoever can write to Redis cannot make a
# worker unpickle (run) arbitrary code
SERIALIZER = JSONSerializer


def queue_for(redis: Redis, name: str) -> Queue:
    """The RQ queue `name` with our (JSON) serializer."""
    return Queue(name, connection=redis, serializer=SERIALIZER)


def fetch_job(redis: Redis, job_id: str) -> Job:
    """An RQ job by id, read with our (JSON) serializer."""
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def lock_key(project: int) -> str:
    """The Redis key of the project's job lock (held by the job that trains, scores or publishes it)."""
    return f"lsal:p:{project}:lock"


def pending_key(project: int, kind: str) -> str:
    """The Redis key holding the id of the project's pending job of `kind`."""
    return f"lsal:p:{project}:pending:{kind}"


def _live(redis: Redis, job_id: str) -> bool:
    """Whether the job still exists and has not ended."""
    try:
        return fetch_job(redis, job_id).get_status(refresh=True) not in _DONE
    except NoSuchJobError:
        return False


def enqueue(redis: Redis, queue: str, kind: str, project: int, *args: object, timeout: int = 3600,
            coalesce: bool = True, reason: str = "") -> Enqueued:
    """Enqueue `kind` for `project` unless one is already pending (then return that one)."""
    func = JOBS[kind]
    key = pending_key(project, kind)
    for _ in range(2):
        job_id = f"lsal-{kind}-p{project}-{uuid.uuid4().hex[:16]}"
        if coalesce and not redis.set(key, job_id, nx=True, ex=timeout * 4):
            existing = redis.get(key)
            if existing is not None and _live(redis, existing.decode()):
                return Enqueued(existing.decode(), False)
            # the recorded job ended without clearing the key (it crashed or was lost): replace it
            redis.delete(key)
            continue
        try:
            queue_for(redis, queue).enqueue(
                func, project, *args, job_id=job_id, job_timeout=timeout, result_ttl=7 * 86400,
                retry=Retry(max=len(RETRY_INTERVALS_S), interval=list(RETRY_INTERVALS_S)),
                failure_ttl=30 * 86400, meta={"project": project, "kind": kind, "reason": reason},
                description=f"{kind} project {project}" + (f" ({reason})" if reason else ""))
        except Exception:
            if coalesce:
                redis.delete(key)
            raise
        return Enqueued(job_id, True)
    raise RuntimeError(f"could not enqueue {kind} for project {project}: the pending key kept changing")


def release_pending(redis: Redis, project: int, kind: str, job_id: str) -> bool:
    """Clear the pending marker if it still names `job_id` (called by that job when it starts)."""
    key = pending_key(project, kind)
    value = redis.get(key)
    if value is not None and value.decode() == job_id:
        redis.delete(key)
        return True
    return False


def pending_job(redis: Redis, project: int, kind: str) -> str | None:
    """The id of the project's pending job of `kind`, if any."""
    value = redis.get(pending_key(project, kind))
    return None if value is None else value.decode()
