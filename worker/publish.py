"""publish: write a ranking to Label Studio so that its /next serves our first-ranked task.

Label Studio (uncertainty sampling) serves the unlabeled task with the lowest prediction score among
predictions whose model_version is the project's model_version. So a publication imports one prediction per
task under a fresh version string with score = rank / N, and only then switches the project to that version:
until the switch, annotators keep the previous order; a publication that fails half-way is never live.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import numpy as np

from core.ls_client import UNCERTAINTY_SAMPLING, LabelStudioError
from core.stopping import evaluate
from plugins.confident import ConfidentRule
from worker.context import JobContext
from worker.export import export_confident
from worker.locking import LockLostError
from worker.score import Scored
from worker.task_fields import reason, write_task_fields

log = logging.getLogger("lsal.worker")
VERSION_PREFIX = "lsal-"
_PUBLICATION = re.compile(r"^lsal-.*-p(\d+)$")


def priority_scores(ranks: np.ndarray) -> np.ndarray:
    """Label Studio scores from ranks: rank 0 gets the lowest score, all in [0, 1)."""
    n = max(len(ranks), 1)
    return np.asarray(ranks, dtype=np.float64) / n


def served_ranks(ranks: np.ndarray, confident: np.ndarray) -> np.ndarray:
    """The ranks the order serves: confident tasks after all others, each group in the strategy's order."""
    order = np.lexsort((np.asarray(ranks), np.asarray(confident, dtype=bool)))
    served = np.empty(len(order), dtype=np.int64)
    served[order] = np.arange(len(order))
    return served


def confident_of(ctx: JobContext, scored: Scored) -> tuple[ConfidentRule | None, np.ndarray]:
    """The serving version's confident pre-label rule (None: none set) and which scored tasks it marks."""
    none = np.zeros(len(scored.task_ids), dtype=bool)
    record = (ctx.store.version(scored.version) or {}).get("confident")
    if not scored.kind.confident_labels or not record or record.get("threshold") is None:
        return None, none
    rule = ConfidentRule.from_dict(record)
    return rule, rule.confident(np.asarray(scored.outputs, dtype=np.float64))


def build_predictions(scored: Scored, model_version: str, ranks: np.ndarray,
                      confident: np.ndarray | None = None,
                      rule: ConfidentRule | None = None) -> tuple[list[dict], dict]:
    """(Label Studio predictions, {task: what humans and stream mode need}) for a scored pool served in the
    order `ranks`; tasks `confident` get their pre-annotation marked as a confident pre-label of `rule`."""
    ranking = scored.ranking
    values = ranking.scores
    scores = priority_scores(ranks)
    n = len(scored.task_ids)
    sure = np.zeros(n, dtype=bool) if confident is None else np.asarray(confident, dtype=bool)
    predictions, table = [], {}
    for i, task in enumerate(scored.task_ids):
        seen = scored.summary(i)
        result = scored.kind.regions(scored.outputs[i], scored.threshold)
        if result:
            text = reason(int(ranks[i]) + 1, n, ranking.strategy, seen["label"], seen["confidence"],
                          scored.kind.uncertainty_name, seen["uncertainty"], scored.version,
                          rule if sure[i] else None)
            result[0]["meta"] = {"text": [text]}
        prediction: dict[str, Any] = {"task": int(task), "result": result, "score": float(scores[i]),
                                      "model_version": model_version}
        if ranking.clusters is not None:
            prediction["cluster"] = int(ranking.clusters[i])
        predictions.append(prediction)
        table[int(task)] = {"rank": int(ranks[i]), "score": float(scores[i]), "label": seen["label"],
                            "confidence": seen["confidence"], "entropy": seen["uncertainty"],
                            "value": None if values is None else float(values[i]), "confident": bool(sure[i])}
    return predictions, table


def confident_summary(rule: ConfidentRule | None, confident: np.ndarray) -> dict[str, Any] | None:
    """What a publication says about its confident pre-labels: the rule and the pool share above it."""
    if rule is None:
        return None
    above = int(np.count_nonzero(confident))
    return {"threshold": rule.threshold, "target": rule.target, "level": rule.level, "precision": rule.precision,
            "lower_bound": rule.lower_bound, "held_out": rule.held_out, "held_out_above": rule.above,
            "pool": int(len(confident)), "pool_above": above,
            "pool_share": above / len(confident) if len(confident) else 0.0}


def publish(ctx: JobContext, scored: Scored) -> dict[str, Any]:
    """Import the ranking as a new prediction version, switch the project to it, prune old versions.

    A job that lost its project lock stops before the import and again before the switch: another job may
    be publishing the project, and only one order may go live."""
    store = ctx.store
    settings = ctx.project_settings
    ctx.check_lock()
    number = store.next_publication()
    model_version = f"{VERSION_PREFIX}{scored.version}-{scored.ranking.strategy}-p{number}"
    rule, confident = confident_of(ctx, scored)
    predictions, table = build_predictions(scored, model_version, served_ranks(scored.ranking.ranks, confident),
                                           confident, rule)
    with ctx.phase("publish"):
        try:
            ctx.ls.import_predictions(ctx.project, predictions)
            ctx.check_lock()
            ctx.ls.update_project(ctx.project, model_version=model_version, sampling=UNCERTAINTY_SAMPLING)
        except (LabelStudioError, LockLostError):
            _discard(ctx, model_version)
            raise
    order = sorted(table, key=lambda t: table[t]["rank"])
    record = {"model_version": model_version, "version": scored.version, "publication": number,
              "strategy": scored.strategy.config(), "tasks": len(table), "top": order[:10],
              "published_at": time.time(), "info": _jsonable(scored.ranking.info),
              "max_uncertainty": float(np.max(scored.uncertainty())) if len(table) else None,
              "confident": confident_summary(rule, confident)}
    store.set_published(record, table)
    if settings.task_fields:  # after the switch: the order is live whether or not this step completes
        with ctx.phase("task_fields"):
            record["task_fields"] = write_task_fields(ctx, table, scored.ranking.strategy, scored.version,
                                                      scored.kind.uncertainty_name, rule)
        store.set_info(task_fields={"model_version": model_version, **record["task_fields"]})
    if settings.confident_export and rule is not None and confident.any():  # after the switch, as task fields
        with ctx.phase("export_confident"):
            record["exported"] = export_confident(ctx, scored, confident)
        store.set_info(exported={"model_version": model_version, **record["exported"]})
    evaluate(store, settings.stopping, after=f"publication {model_version}")
    with ctx.phase("prune"):
        pruned = prune_versions(ctx, keep=settings.keep_versions)
    return {**record, "pruned": pruned}


def prune_versions(ctx: JobContext, keep: int) -> list[str]:
    """Delete our prediction versions in Label Studio except the newest `keep` successful publications."""
    kept = {p["model_version"] for p in ctx.store.publications()[-keep:]}
    live = ctx.store.published()
    if live:
        kept.add(live["model_version"])
    removed = []
    for version in ctx.ls.model_versions(ctx.project):
        if _PUBLICATION.match(version) and version not in kept:
            ctx.ls.delete_model_version(ctx.project, version)
            removed.append(version)
    return removed


def _discard(ctx: JobContext, model_version: str) -> None:
    """Best effort: remove what a failed publication imported (the next prune catches what remains)."""
    try:
        ctx.ls.delete_model_version(ctx.project, model_version)
    except LabelStudioError as exc:
        log.warning("project %s: could not delete the failed publication %s (%s); the next prune does",
                    ctx.project, model_version, exc)


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in (info or {}).items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = str(v)[:200]
    return out
