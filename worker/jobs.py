"""RQ job functions (enqueued by core.queueing by import path): retrain -> rescore (+ publish), stream, connect."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from core.ls_client import LabelStudioError
from core.queueing import enqueue
from core.stopping import budget_spent, evaluate
from core.tokens import WEBHOOK_TOKEN_HEADER, secret_tag, webhook_token
from worker.context import JobContext
from worker.publish import publish
from worker.review import review_project
from worker.runner import run_job
from worker.score import Scored, project_strategy, score_tasks, stale_model
from worker.shards import plan_shards
from worker.train import train_version

log = logging.getLogger("lsal.worker")


def retrain(project: int) -> dict[str, Any]:
    """Train a new version on all current annotations; then enqueue a rescore."""

    def body(ctx: JobContext) -> dict[str, Any]:
        rule = ctx.project_settings.stopping
        spent = budget_spent(ctx.store, rule)
        if spent is not None:  # the order stays live; raising the budget trains again
            return {"status": "stopped", "criterion": spent.criterion, "reason": spent.reason}
        taken = ctx.store.take_changes()
        try:
            result = train_version(ctx)
        except Exception:  # the changes stay due: the next event or the retry trains them
            ctx.store.give_back_changes(taken)
            raise
        if result["status"] == "trained":
            result["stopping"] = evaluate(ctx.store, rule, after=f"retrain {result['version']}")
            ctx.progress(phase="enqueue_rescore")
            result["rescore_job"] = enqueue(ctx.redis, ctx.settings.queue, "rescore", ctx.project,
                                            timeout=ctx.settings.job_timeout_s, reason=result["version"]).job_id
        elif result["status"] == "held_back":  # the serving version and its order stay; the labels still change
            log.info("project %s: %s %s", ctx.project, result["version"], result["promotion"]["reason"])
        if result["status"] in ("trained", "held_back") and ctx.project_settings.review:
            result["review_job"] = enqueue_review(ctx, result["version"])
        return result  # not trained (too few labels): the next retrain_every changes try again

    return run_job(project, "retrain", body)


def enqueue_review(ctx: JobContext, version: str) -> str | None:
    """Queue the label review behind the rescore (the order goes live first); the retrain stands if this
    fails: the next retrain queues one again."""
    try:
        return enqueue(ctx.redis, ctx.settings.queue, "review", ctx.project, timeout=ctx.settings.job_timeout_s,
                       reason=version).job_id
    except Exception as exc:  # noqa: BLE001 - the review is never worth failing a retrain for
        log.warning("project %s: label review not queued: %s", ctx.project, exc)
        return None


def review(project: int) -> dict[str, Any]:
    """Review every labeled task's label out of fold (plugins.label_quality); the flagged ones are kept for
    reviewers. Changes no annotation; runs apart from retrain and rescore, so its failure breaks neither."""
    return run_job(project, "review", review_project)


def rescore(project: int) -> dict[str, Any]:
    """Rank every unlabeled task with the project's strategy and publish the order to Label Studio (pools
    over shard_size are split into shard jobs; their merge job publishes)."""

    def body(ctx: JobContext) -> dict[str, Any]:
        version = ctx.store.current_version()
        if version is None:
            return {"status": "no_model", "reason": "no model version yet; the first retrain creates one"}
        with ctx.phase("fetch_tasks"):
            _, kind = ctx.project_kind()
            sets = ctx.task_sets(kind)
        ctx.store.set_info(labeled=len(sets.labeled), unlabeled=len(sets.unlabeled))
        if not sets.unlabeled:
            return {"status": "nothing_to_score", "labeled": len(sets.labeled)}
        stale = stale_model(kind, ctx.models.get(ctx.project, version), version)
        if stale:
            return {"status": "stale_model", "reason": stale}
        if kind.shardable and len(sets.unlabeled) > ctx.project_settings.shard_size:
            project_strategy(ctx, kind)  # refused for this kind before any shard is computed
            return plan_shards(ctx, version, sets.unlabeled, ctx.project_settings.shard_size)
        scored = score_tasks(ctx, version, sets.unlabeled, kind, sets.labeled)
        return {"status": "published", **publish(ctx, scored)}

    return run_job(project, "rescore", body)


def score_new_tasks(project: int, task_ids: list[int]) -> dict[str, Any]:
    """Stream mode: give newly imported tasks a place in the live order at once, with the serving model."""

    def body(ctx: JobContext) -> dict[str, Any]:
        settings = ctx.project_settings
        live = ctx.store.published()
        if live is None or ctx.store.current_version() != live["version"]:
            return {"status": "no_live_order", "reason": "nothing published yet; the next rescore ranks them"}
        wanted = {int(t) for t in task_ids}
        _, kind = ctx.project_kind()
        sets = ctx.task_sets(kind, ids=wanted)  # only the new ones, not the whole project
        pool = [(t, v) for t, v in sets.unlabeled if t in wanted]
        if not pool:
            return {"status": "nothing_to_score"}
        scored = score_tasks(ctx, live["version"], pool, kind, [])
        placed = place_in_order(ctx, scored, settings.stream_threshold)
        predictions = [{"task": t, "result": kind.regions(scored.outputs[i], scored.threshold),
                        "score": placed[t]["score"], "model_version": live["model_version"]}
                       for i, t in enumerate(scored.task_ids)]
        ctx.check_lock()
        with ctx.phase("publish"):
            ctx.ls.import_predictions(ctx.project, predictions)
        ctx.redis.hset(ctx.store.key("ranking"), mapping={str(t): json.dumps(r) for t, r in placed.items()})
        held = sum(1 for r in placed.values() if r.get("held_back"))
        return {"status": "scored", "tasks": len(placed), "held_back": held}

    return run_job(project, "score_new", body)


def place_in_order(ctx: JobContext, scored: Scored, threshold: float | None) -> dict[int, dict[str, Any]]:
    """Scores that slot new tasks into the published order by their strategy value (higher = earlier)."""
    published = [r for r in (ctx.store.ranking_head(10**9)) if r.get("value") is not None]
    values = scored.ranking.scores
    if values is None:  # a strategy without per-item values (random): new tasks go after the ranked ones
        values = np.full(len(scored.task_ids), -np.inf)
    existing = sorted(published, key=lambda r: r["rank"])
    ex_values = np.asarray([r["value"] for r in existing], dtype=np.float64)
    ex_scores = np.asarray([r["score"] for r in existing], dtype=np.float64)
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
        seen = scored.summary(i)
        out[int(task)] = {"rank": -1, "score": float(score), "label": seen["label"],
                          "confidence": seen["confidence"], "entropy": seen["uncertainty"],
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

    return run_job(project, "connect", body)


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
