"""rescore: run the project's strategy over every unlabeled task with the serving model version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from core.label_config import ClassificationTarget, parse_target
from core.labeled_set import split_tasks
from plugins.models.artifact import Artifact
from plugins.strategies import Input, Ranking, Strategy
from worker.context import JobContext

LABELED_INPUTS = {Input.LABELED_EMBEDDINGS, Input.LABELED_LABELS}


@dataclass
class Scored:
    """A strategy's ranking of a set of tasks, with what humans want to see per task."""

    task_ids: list[int]
    ranking: Ranking
    probs: np.ndarray  # (N, C)
    target: ClassificationTarget
    artifact: Artifact
    version: str
    strategy: Strategy

    def uncertainty(self) -> np.ndarray:
        """Predictive entropy of each task (nats)."""
        p = np.clip(self.probs, 1e-12, 1.0)
        return -(p * np.log(p)).sum(axis=1)


def score_tasks(ctx: JobContext, version: str, pool: list[tuple[int, str]], target: ClassificationTarget,
                labeled: list[tuple[int, str, str]]) -> Scored:
    """Rank `pool` ((task, url) pairs) with the project's strategy and model version `version`."""
    settings = ctx.project_settings
    artifact = ctx.models.get(ctx.project, version)
    model = artifact.model
    strategy = settings.build_strategy()
    needs = strategy.required_inputs() | (strategy.optional_inputs() & model.provides) | {Input.PROBS}
    fetcher = ctx.fetcher()
    size, channels = settings.image_size, settings.channels
    with ctx.phase("load_images"):
        ids, x_pool, skipped = fetcher.load_many(pool, size, channels)
        x_lab = np.zeros((0, size, size, channels), dtype=np.uint8)
        y_lab = np.zeros(0, dtype=np.int64)
        if needs & LABELED_INPUTS and labeled:
            index = {label: i for i, label in enumerate(artifact.label_map)}
            usable = [(t, u, lab) for t, u, lab in labeled if lab in index]
            lab_ids, x_lab, more = fetcher.load_many([(t, u) for t, u, _ in usable], size, channels)
            label_of = {t: lab for t, _, lab in usable}
            y_lab = np.asarray([index[label_of[t]] for t in lab_ids], dtype=np.int64)
    fetcher.close()
    ctx.store.set_info(score_skipped=[s.__dict__ for s in skipped[:50]])
    with ctx.phase("inference"):
        inputs = model.pool_inputs(x_pool, frozenset(needs), x_lab, y_lab)
    with ctx.phase("strategy"):
        ranking = strategy.rank(inputs)
    probs = np.asarray(inputs.probs, dtype=np.float64) if inputs.probs is not None else \
        model.predict_proba(x_pool)
    return Scored(ids, ranking, probs, target, artifact, version, strategy)


def rescore_project(ctx: JobContext) -> Scored | dict[str, Any]:
    """Score every unlabeled task of the project; a status dict when there is nothing to score with."""
    version = ctx.store.current_version()
    if version is None:
        return {"status": "no_model", "reason": "no model version yet; the first retrain creates one"}
    with ctx.phase("fetch_tasks"):
        project = ctx.ls.project(ctx.project)
        target = parse_target(project.get("label_config", ""))
        sets = split_tasks(ctx.ls.tasks(ctx.project), target)
    if not sets.unlabeled:
        return {"status": "nothing_to_score", "labeled": len(sets.labeled)}
    shard_size = ctx.project_settings.shard_size
    if len(sets.unlabeled) > shard_size:  # split across workers; the merge job publishes
        from worker.shards import plan_shards

        ctx.store.set_info(labeled=len(sets.labeled), unlabeled=len(sets.unlabeled))
        return plan_shards(ctx, version, sets.unlabeled, shard_size)
    scored = score_tasks(ctx, version, sets.unlabeled, target, sets.labeled)
    ctx.store.set_info(labeled=len(sets.labeled), unlabeled=len(sets.unlabeled))
    return scored
