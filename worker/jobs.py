"""RQ job functions (enqueued by the backend by import path): retrain -> rescore (+ publish), stream, connect."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from core.tokens import WEBHOOK_TOKEN_HEADER, secret_tag, webhook_token
from core.ls_client import LabelStudioError
from core.label_config import parse_target
from core.queueing import enqueue, release_pending
from worker.context import JobContext
from worker.locking import project_lock
from worker.publish import publish
from worker.score import Scored, rescore_project, score_tasks
from worker.train import train_version

log = logging.getLogger("lsal.worker")


def _run(project: int, kind: str, body) -> dict[str, Any]:
    """Take the project lock, clear our pending marker, run `body(ctx)`, record the outcome for status."""
    ctx = JobContext.create(project)
    started = time.time()
    try:
        with project_lock(ctx.redis, project, wait_s=ctx.settings.job_timeout_s, lease_s=ctx.settings.lock_lease_s):
            locked_at = time.time()
            if ctx.job is not None:
                release_pending(ctx.redis, project, kind, ctx.job.id)
            try:
                result = body(ctx)
            except Exception as exc:
                ctx.store.set_info(**{f"last_{kind}": {"status": "failed", "error": f"{type(exc).__name__}: "
                                                       f"{exc}"[:500], "at": time.time(),
                                                       "job": ctx.job.id if ctx.job else None}})
                raise
            finished_at = time.time()
        result = {**result, "timings": dict(ctx.timings), "duration_s": round(finished_at - started, 3),
                  "locked_at": locked_at, "finished_at": finished_at}
        ctx.store.set_info(**{f"last_{kind}": {**result, "at": time.time(),
                                               "job": ctx.job.id if ctx.job else None}})
        log.info("project %s: %s %s in %.1f s", project, kind, result.get("status"), result["duration_s"])
        return result
    finally:
        ctx.close()


def retrain(project: int) -> dict[str, Any]:
    """Train a new version on all current annotations; then enqueue a rescore."""

    def body(ctx: JobContext) -> dict[str, Any]:
        taken = ctx.store.take_changes()
        try:
            result = train_version(ctx)
        except Exception:
            ctx.store.give_back_changes(taken)
            raise
        if result["status"] == "trained":
            ctx.progress(phase="enqueue_rescore")
            result["rescore_job"] = enqueue(ctx.redis, ctx.settings.queue, "rescore", ctx.project,
                                            timeout=ctx.settings.job_timeout_s, reason=result["version"]).job_id
        return result  # not trained (too few labels): the next retrain_every changes try again

    return _run(project, "retrain", body)


def rescore(project: int) -> dict[str, Any]:
    """Rank every unlabeled task with the project's strategy and publish the order to Label Studio."""

    def body(ctx: JobContext) -> dict[str, Any]:
        scored = rescore_project(ctx)
        if not isinstance(scored, Scored):
            return scored
        published = publish(ctx, scored)
        return {"status": "published", **published}

    return _run(project, "rescore", body)


def score_new_tasks(project: int, task_ids: list[int]) -> dict[str, Any]:
    """Stream mode: give newly imported tasks a place in the live order at once, with the serving model."""

    def body(ctx: JobContext) -> dict[str, Any]:
        settings = ctx.project_settings
        live = ctx.store.published()
        if live is None or ctx.store.current_version() != live["version"]:
            return {"status": "no_live_order", "reason": "nothing published yet; the next rescore ranks them"}
        wanted = {int(t) for t in task_ids}
        project_data = ctx.ls.project(ctx.project)
        target = parse_target(project_data.get("label_config", ""))
        pool = []
        for task in ctx.ls.tasks(ctx.project, ids=wanted):  # only the new ones, not the whole project
            if task.get("id") in wanted and not task.get("annotations"):
                url = (task.get("data") or {}).get(target.value_key)
                if isinstance(url, str) and url:
                    pool.append((task["id"], url))
        if not pool:
            return {"status": "nothing_to_score"}
        scored = score_tasks(ctx, live["version"], pool, target, [])
        placed = place_in_order(ctx, scored, settings.stream_threshold)
        predictions = [{"task": t, "result": target.result(row["label"]), "score": row["score"],
                        "model_version": live["model_version"]} for t, row in placed.items()]
        with ctx.phase("publish"):
            ctx.ls.import_predictions(ctx.project, predictions)
        ctx.redis.hset(ctx.store.key("ranking"), mapping={str(t): json.dumps(r) for t, r in placed.items()})
        held = sum(1 for r in placed.values() if r.get("held_back"))
        return {"status": "scored", "tasks": len(placed), "held_back": held}

    return _run(project, "score_new", body)


def place_in_order(ctx: JobContext, scored: Scored, threshold: float | None) -> dict[int, dict[str, Any]]:
    """Scores that slot new tasks into the published order by their strategy value (higher = earlier)."""
    published = [r for r in (ctx.store.ranking_head(10**9)) if r.get("value") is not None]
    values = scored.ranking.scores
    if values is None:  # a strategy without per-item values (random): new tasks go after the ranked ones
        values = np.full(len(scored.task_ids), -np.inf)
    existing = sorted(published, key=lambda r: r["rank"])
    ex_values = np.asarray([r["value"] for r in existing], dtype=np.float64)
    ex_scores = np.asarray([r["score"] for r in existing], dtype=np.float64)
    probs, entropy = scored.probs, scored.uncertainty()
    out = {}
    for i, task in enumerate(scored.task_ids):
        value = float(values[i])
        # first published task (in order) that this one beats; it slots in just before it
        beaten = np.flatnonzero(ex_values < value)
        if len(beaten):
            j = int(beaten[0])
            before = ex_scores[j - 1] if j > 0 else ex_scores[j] - 1e-6
            score = (before + ex_scores[j]) / 2
        else:
            score = float(ex_scores.max()) + 1e-6 if len(ex_scores) else 0.5
        held = threshold is not None and np.isfinite(value) and value < threshold
        if held:
            score = 1.0 + score  # after every ranked task: served only when the rest is done
        out[int(task)] = {"rank": -1, "score": float(score), "label": scored.artifact.label_map[int(probs[i].argmax())],
                          "confidence": float(probs[i].max()), "entropy": float(entropy[i]),
                          "value": value if np.isfinite(value) else None, "stream": True, "held_back": held}
    return out


def connect(project: int, *_ignored: Any) -> dict[str, Any]:
    """Register the project's webhook to this backend and, if a version is live, point Label Studio at it.

    The webhook's URL comes from trusted places only: LSAL_PUBLIC_URL, else the ML backend URL the project's
    Label Studio admin connected. Its header is the project's webhook token, never LSAL_SECRET (Label Studio
    shows webhook headers to whoever may list them). Arguments after `project` (a URL, in jobs queued by
    versions before 2026-12) are ignored.
    """

    def body(ctx: JobContext) -> dict[str, Any]:
        if ctx.settings.secret is None:
            return {"status": "no_secret", "reason": "LSAL_SECRET is not set: /webhook would refuse every event"}
        ctx.store.set_info(connect_started_at=time.time())
        try:
            url = webhook_target(ctx)
            token = webhook_token(ctx.settings.secret.get_secret_value(), ctx.project)
            hook = ctx.ls.ensure_webhook(ctx.project, url, {WEBHOOK_TOKEN_HEADER: token})
            ctx.store.set_info(webhook_url=url, webhook_secret_tag=secret_tag(token), webhook_error=None)
        except (ConnectError, LabelStudioError) as exc:
            ctx.store.set_info(webhook_error=str(exc)[:500])
            raise
        finally:
            ctx.store.set_info(connect_started_at=None)
        live = ctx.store.published()
        if live is not None:
            ctx.ls.update_project(ctx.project, model_version=live["model_version"])
        return {"status": "connected", "webhook": hook.get("id") if isinstance(hook, dict) else None, "url": url}

    return _run(project, "connect", body)


class ConnectError(RuntimeError):
    """The worker does not know where Label Studio reaches the backend; the message says what to set."""


def webhook_target(ctx: JobContext) -> str:
    """Where the project's webhook goes: LSAL_PUBLIC_URL, else the one ML backend connected to the project."""
    if ctx.settings.public_url:
        return f"{ctx.settings.public_url}/webhook"
    urls = sorted({str(b.get("url")).rstrip("/") for b in ctx.ls.ml_backends(ctx.project)
                   if isinstance(b, dict) and str(b.get("url", "")).startswith(("http://", "https://"))})
    if len(urls) != 1:
        raise ConnectError(f"project {ctx.project} has {len(urls)} ML backends connected in Label Studio "
                           f"({', '.join(urls) or 'none'}): set LSAL_PUBLIC_URL to the URL at which Label "
                           "Studio reaches this backend")
    return f"{urls[0]}/webhook"
