"""Admin operations shared by the HTTP admin API and the `lsal` CLI: settings, triggers, versions, status."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from core.project_settings import InvalidSettingsError, ProjectSettings, validate_settings
from core.queueing import JOBS, Enqueued, enqueue, fetch_job, lock_key, pending_job, queue_for
from core.stopping import budget_spent
from core.store import ProjectStore
from plugins.models import MODELS
from plugins.strategies import STRATEGIES

TRIGGERS = ("retrain", "rescore")
# A version's held-out accuracy is shown (with its Wilson 95% interval) from this many held-out items on:
# below, one item more or less right moves it by more than 5 points, and 1.000 from 3 items means nothing.
MIN_HOLDOUT = 20
_Z95 = 1.959963984540054
log = logging.getLogger("lsal.admin")


def wilson_interval(accuracy: float, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion `accuracy` measured on `n` items; unlike
    the normal approximation it stays inside [0, 1] and is not zero-width at 0 or 1."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(float(accuracy), 0.0), 1.0)
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def holdout_view(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """How far a version's held-out accuracy can be trusted: {'n' (held-out items, None when the record
    predates counting them), 'accuracy', 'interval95' (Wilson, [low, high]), 'min_n', 'shown'}; 'shown' is
    False (and accuracy and interval None) below MIN_HOLDOUT items."""
    metrics = metrics or {}
    n, accuracy = metrics.get("holdout_size"), metrics.get("holdout_accuracy")
    n = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None
    accuracy = float(accuracy) if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) else None
    view: dict[str, Any] = {"n": n, "accuracy": None, "interval95": None, "min_n": MIN_HOLDOUT, "shown": False}
    if accuracy is None or (n is not None and n < MIN_HOLDOUT):
        return view
    view.update(accuracy=accuracy, shown=True,
                interval95=None if n is None else [round(v, 4) for v in wilson_interval(accuracy, n)])
    return view


def update_settings(store: ProjectStore, defaults: ProjectSettings, patch: dict[str, Any],
                    weights_dir: Path | None = None) -> ProjectSettings:
    """Merge `patch` into the project's settings (nested 'strategy'/'model' replaced whole) and store them;
    a new pretrained_path must name a file inside `weights_dir` (LSAL_WEIGHTS_DIR)."""
    if not isinstance(patch, dict):
        raise InvalidSettingsError("settings must be a JSON object")
    current = store.settings(defaults)
    merged = {**current.model_dump(mode="json"), **patch}
    return store.set_settings(validate_settings(merged, weights_dir, current))


def set_strategy(store: ProjectStore, defaults: ProjectSettings, name: str,
                 params: dict[str, Any] | None = None, weights_dir: Path | None = None) -> ProjectSettings:
    """Switch the project's strategy; each param goes where it belongs: strategy, model or project setting.

    `lsal strategy set --project 7 bald --mc-samples 20`: BALD has no mc_samples, the cnn model does, so
    the model gets it.
    """
    if name not in STRATEGIES:
        raise InvalidSettingsError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES.names())}")
    current = store.settings(defaults)
    strategy_fields = STRATEGIES.get(name).Params.model_fields
    model_fields = MODELS.get(current.model.name).Params.model_fields if current.model.name in MODELS else {}
    project_fields = set(ProjectSettings.model_fields) - {"strategy", "model"}
    strategy_params, model_params, project = {}, dict(current.model.params), {}
    for key, value in (params or {}).items():
        key = key.replace("-", "_")
        if key in strategy_fields:
            strategy_params[key] = value
        elif key in model_fields:
            model_params[key] = value
        elif key in project_fields:
            project[key] = value
        else:
            raise InvalidSettingsError(
                f"unknown parameter {key!r} for strategy {name!r} with model {current.model.name!r}; allowed: "
                f"strategy: {', '.join(strategy_fields)}; model: {', '.join(model_fields) or '-'}; "
                f"project: {', '.join(sorted(project_fields))}")
    merged = {**current.model_dump(mode="json"), **project, "strategy": {"name": name, "params": strategy_params},
              "model": {"name": current.model.name, "params": model_params}}
    return store.set_settings(validate_settings(merged, weights_dir, current))


def record_audit(store: ProjectStore, actor: str, action: str, detail: dict[str, Any]) -> dict[str, Any]:
    """Keep (and log) who changed what in a project: settings, strategy, rollback, triggered jobs."""
    record = {"at": time.time(), "actor": actor, "action": action, "detail": detail}
    store.audit(record)
    log.info("audit: project %s %s by %s: %s", store.project, action, actor, json.dumps(detail, default=str)[:500])
    return record


def trigger(redis: Redis, queue: str, project: int, kind: str, reason: str, timeout: int) -> Enqueued:
    """Enqueue a retrain or a rescore of the project now (coalesced with a pending one)."""
    if kind not in TRIGGERS:
        raise ValueError(f"unknown job {kind!r}; one of {', '.join(TRIGGERS)}")
    return enqueue(redis, queue, kind, project, timeout=timeout, reason=reason)


def retrain_due(store: ProjectStore, settings: ProjectSettings, labeled: int | None) -> int | None:
    """How many changes make a retrain due now (None: not due, also once the stopping budget is spent);
    `labeled` = Label Studio's annotated tasks."""
    if budget_spent(store, settings.stopping) is not None:
        return None
    changes = store.pending_changes()
    new_labels = labeled - store.trained_count() if isinstance(labeled, int) else 0
    if max(changes, new_labels) >= settings.retrain_every:
        return max(changes, new_labels)
    if store.current_version() is None and isinstance(labeled, int) and labeled >= settings.min_labels:
        return labeled
    return None


def abandoned_jobs(redis: Redis, queue: str, project: int, grace_s: float = 15.0) -> list[Job]:
    """The project's started jobs whose worker is gone: nobody has held the project lock, which every job
    keeps alive with a heartbeat while it works, and they started more than `grace_s` ago."""
    if redis.exists(lock_key(project)):
        return []
    q = queue_for(redis, queue)
    out = []
    for job_id in StartedJobRegistry(queue=q).get_job_ids():
        if not job_id.startswith("lsal-") or f"-p{project}-" not in job_id:
            continue
        try:
            job = fetch_job(redis, job_id)
        except NoSuchJobError:
            continue
        started = job.started_at.timestamp() if job.started_at else time.time()
        if job.get_status(refresh=False) == JobStatus.STARTED and time.time() - started > grace_s:
            out.append(job)
    return out


def reconcile(redis: Redis, store: ProjectStore, defaults: ProjectSettings, queue: str, timeout: int,
              labeled: int | None) -> dict[str, Any]:
    """Enqueue what lost webhooks or a Redis outage left undone: a due retrain, an unpublished version."""
    settings = store.settings(defaults)
    out: dict[str, Any] = {"project": store.project, "labeled": labeled, "trained_on": store.trained_count()}
    abandoned = abandoned_jobs(redis, queue, store.project)
    if abandoned:  # their worker died: run the same work again (coalesced with what is pending)
        out["abandoned"] = [job.id for job in abandoned]
        for kind in dict.fromkeys(job.meta.get("kind", "retrain") for job in abandoned):
            if kind in TRIGGERS:
                out[kind] = enqueue(redis, queue, kind, store.project, timeout=timeout,
                                    reason="reconcile: a worker died mid-job").job_id
        if "retrain" in out:
            return out
    due = retrain_due(store, settings, labeled)
    if due is not None:
        out["retrain"] = enqueue(redis, queue, "retrain", store.project, timeout=timeout,
                                 reason=f"reconcile: {due} changes").job_id
        return out
    live = store.published()
    current = store.current_version()
    if current is not None and (live is None or live.get("version") != current):
        out["rescore"] = enqueue(redis, queue, "rescore", store.project, timeout=timeout,
                                 reason="reconcile: serving version not published").job_id
    return out


def rollback(store: ProjectStore, version: str) -> dict[str, Any]:
    """Serve an earlier model version (the caller then enqueues a rescore to publish its order)."""
    record = store.version(version)
    if record is None:
        known = ", ".join(v["version"] for v in store.versions()) or "none"
        raise KeyError(f"project {store.project} has no model version {version!r}; versions: {known}")
    store.set_current_version(version)
    return record


def _review_summary(record: dict[str, Any] | None, last_job: Any) -> dict[str, Any] | None:
    """What `lsal status` says of the label review: the newest one's counts, and its last job's outcome."""
    if record is None and last_job is None:
        return None
    counts = {k: record.get(k) for k in ("version", "created_at", "labeled", "reviewed", "flagged", "folds")} \
        if record else {}
    return {**counts, "last_job": last_job}


def review_view(store: ProjectStore, limit: int = 50, everything: bool = False) -> dict[str, Any]:
    """The newest label-noise review: how it was made, and its first `limit` items, most doubtful first
    (the flagged ones only, unless `everything`); {'review': None} before the first review."""
    record = store.review()
    if record is None:
        return {"project": store.project, "review": None,
                "reason": "no review yet: the worker reviews the labels after each retrain (setting review)"}
    items = record.get("items") or []
    shown = items if everything else [i for i in items if i.get("flagged")]
    return {"project": store.project, "review": {k: v for k, v in record.items() if k != "items"},
            "items": shown[:limit], "total": len(shown)}


def confident_view(version: dict[str, Any] | None, published: dict[str, Any] | None,
                   exported: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What `lsal status` says of confident pre-labels: the serving version's threshold with its held-out
    precision and bound (or why none is set), the live order's share above it (the labels it saves), and what
    the live publication saved as annotations (`exported`, with confident_export on)."""
    rule = (version or {}).get("confident")
    if not rule:
        return None
    out = {"version": (version or {}).get("version"),
           **{k: rule.get(k) for k in ("target", "level", "threshold", "precision", "lower_bound", "held_out",
                                       "above", "needed", "labels_needed", "reason")}}
    live = (published or {}).get("confident")
    if live and (published or {}).get("version") == out["version"]:
        out.update(pool=live["pool"], pool_above=live["pool_above"], pool_share=live["pool_share"],
                   labels_saved=live["pool_above"])
        if exported and exported.get("model_version") == published.get("model_version"):
            out["exported"] = {k: exported.get(k) for k in ("saved", "of", "error")}
    return out


def _job_view(job: Job) -> dict[str, Any]:
    meta = {k: v for k, v in (job.meta or {}).items() if k in ("phase", "epoch", "loss", "kind", "reason",
                                                                "updated_at", "epochs")}
    return {"id": job.id, "status": str(job.get_status(refresh=False)), "enqueued_at":
            job.enqueued_at.isoformat() if job.enqueued_at else None, **meta}


def queue_state(redis: Redis, queue: str, project: int) -> dict[str, Any]:
    """Queue length, and this project's pending, running and failed jobs."""
    q = queue_for(redis, queue)
    prefix = "lsal-"
    mine = f"-p{project}-"

    def of_project(ids: list[str]) -> list[str]:
        return [i for i in ids if i.startswith(prefix) and mine in i]

    running = [fetch_job(redis, i) for i in of_project(StartedJobRegistry(queue=q).get_job_ids())]
    failed_ids = of_project(FailedJobRegistry(queue=q).get_job_ids())
    last_failed = None
    if failed_ids:
        job = fetch_job(redis, failed_ids[-1])
        last_failed = {"id": job.id, "error": (job.latest_result().exc_string if job.latest_result() else "")
                       .strip().splitlines()[-1:] or [""]}
    return {"queue": queue, "queued": q.count, "workers": len(Worker.all(queue=q)),
            "pending": {kind: job for kind in JOBS if (job := pending_job(redis, project, kind))},
            "running": [_job_view(j) for j in running], "failed": len(failed_ids), "last_failed": last_failed}


def status(redis: Redis, store: ProjectStore, defaults: ProjectSettings | None, queue: str) -> dict[str, Any]:
    """Everything `lsal status` shows for one project. 'settings' are those in force: the stored ones, else
    `defaults`, which only the service may pass (its LSAL_DEFAULTS are what its workers use); without them a
    project with no stored settings has 'settings' None, never another process's defaults. Each version
    carries 'holdout' (holdout_view: held-out items, accuracy and its Wilson interval, or nothing below
    MIN_HOLDOUT items)."""
    info = store.info()
    versions = store.versions()
    published = store.published()
    stored = store.stored_settings() is not None
    in_force = store.settings(defaults) if stored or defaults is not None else None
    return {
        "project": store.project,
        "settings": in_force.model_dump(mode="json") if in_force is not None else None,
        "settings_stored": stored,
        "settings_source": "stored" if stored else "service defaults (LSAL_DEFAULTS)" if in_force else None,
        "current_version": store.current_version(),
        "versions": [{**{k: v.get(k) for k in ("version", "created_at", "labeled", "metrics", "model",
                                                 "class_counts", "warm_start", "kind", "primary_metric",
                                                 "augmentation", "promoted", "promotion")},
                      "holdout": holdout_view(v.get("metrics"))}
                     for v in versions],
        "published": published,
        "labeled": info.get("labeled"), "unlabeled": info.get("unlabeled"),
        "changes_since_training": store.pending_changes(),
        "trained_on_tasks_with_annotations": store.trained_count(),
        "webhook_url": info.get("webhook_url"),
        "events": store.events(),
        "queue": queue_state(redis, queue, store.project),
        "last_retrain": info.get("last_retrain"), "last_rescore": info.get("last_rescore"),
        "last_score_new": info.get("last_score_new"),
        "stopping": info.get("stopping"),
        "task_fields": info.get("task_fields"),
        "review": _review_summary(store.review(), info.get("last_review")),
        "confident": confident_view(store.version(store.current_version() or ""), published, info.get("exported")),
        "skipped": (info.get("skipped") or []) + (info.get("score_skipped") or []),
        "audit": store.audit_log(10),
        "now": time.time(),
    }
