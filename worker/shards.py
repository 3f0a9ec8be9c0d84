"""Sharded rescoring: a large pool is split into chunk jobs that any free worker computes; one job merges.

Each shard job loads its tasks' images and computes what the strategy needs with the serving model version:
for per-item strategies (entropy, margin, BALD, ...) the scores themselves, so the merge is a sort; for batch
strategies (BADGE, core-set, TypiClust, ...) the inputs (probabilities, MC samples, embeddings), which the
merge job concatenates, in pool order, before running the strategy once. Either way the order is the one
the unsharded path computes on the same inputs. Shards go to the artifact store as .npz (read with
allow_pickle=False); a failed shard is retried alone (RQ Retry), and the merge runs when all are done.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
from rq import Retry

from core.artifact_store import ArtifactStore, open_store
from core.queueing import RETRY_INTERVALS_S, queue_for
from plugins.kinds import TaskKind
from plugins.models.artifact import Artifact
from plugins.strategies import Input, PoolInputs, Ranking, ScoreStrategy, Strategy, build_strategy
from plugins.strategies.base import descending_order
from worker.context import JobContext
from worker.publish import publish
from worker.runner import run_job
from worker.score import LABELED_INPUTS, Scored, labeled_inputs, needed_inputs

_ARRAYS = ("probs", "samples", "embeddings", "predicted_loss")


def store_for(ctx: JobContext) -> ArtifactStore:
    """The artifact store the shards go to (LSAL_ARTIFACT_STORE, default MODEL_DIR)."""
    return open_store(ctx.settings.artifact_store or str(ctx.settings.model_dir), ctx.settings.s3_endpoint_url)


def shard_key(project: int, run: str, index: int) -> str:
    """Where shard `index` of rescoring run `run` is stored."""
    return f"project-{project}/shards/{run}/{index:05d}.npz"


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def plan_shards(ctx: JobContext, version: str, pool: list[tuple[int, Any]], shard_size: int) -> dict[str, Any]:
    """Enqueue one job per chunk of `pool` and a merge job that depends on them all."""
    run = uuid.uuid4().hex[:12]
    queue = queue_for(ctx.redis, ctx.settings.score_queue or ctx.settings.queue)
    merge_queue = queue_for(ctx.redis, ctx.settings.queue)
    strategy = ctx.project_settings.build_strategy().config()
    retry = Retry(max=len(RETRY_INTERVALS_S), interval=list(RETRY_INTERVALS_S))
    jobs = []
    for index, start in enumerate(range(0, len(pool), shard_size)):
        chunk = [[int(t), u] for t, u in pool[start:start + shard_size]]
        jobs.append(queue.enqueue("worker.shards.score_shard", ctx.project, version, run, index, chunk, strategy,
                                  job_id=f"lsal-shard-p{ctx.project}-{run}-{index}", retry=retry,
                                  job_timeout=ctx.settings.job_timeout_s, meta={"project": ctx.project,
                                                                                "kind": "shard"}))
    merge = merge_queue.enqueue("worker.shards.merge_shards", ctx.project, version, run, len(jobs), strategy,
                                depends_on=jobs, job_id=f"lsal-merge-p{ctx.project}-{run}", retry=retry,
                                job_timeout=ctx.settings.job_timeout_s, meta={"project": ctx.project, "kind": "merge"})
    return {"status": "sharded", "run": run, "shards": len(jobs), "merge_job": merge.id}


def score_shard(project: int, version: str, run: str, index: int, chunk: list[list], strategy_spec: dict) -> dict:
    """Compute one chunk's scores (per-item strategies) or inputs (batch strategies) and store them."""
    ctx = JobContext.create(project)
    _, kind = ctx.project_kind()
    artifact = ctx.models.get(project, version)
    strategy = build_strategy(strategy_spec)
    ids, x, skipped = ctx.inputs(kind, [(int(t), v) for t, v in chunk], artifact)
    needs = needed_inputs(strategy, artifact) - LABELED_INPUTS
    inputs = artifact.model.pool_inputs(x, needs, x[:0], kind.encode([]))
    arrays: dict[str, np.ndarray] = {"task_ids": np.asarray(ids, dtype=np.int64),
                                     "probs": np.asarray(inputs.probs, dtype=np.float32)}
    if isinstance(strategy, ScoreStrategy):
        arrays["scores"] = np.asarray(strategy.rank(inputs).scores, dtype=np.float64)
    else:
        for name in _ARRAYS[1:]:
            value = getattr(inputs, name)
            if value is not None and Input(name) in needs:
                arrays[name] = np.asarray(value, dtype=np.float32)
    store_for(ctx).put(shard_key(project, run, index), _npz(arrays))
    return {"status": "scored", "index": index, "tasks": len(ids), "skipped": len(skipped)}


def merge_order(parts: list[dict[str, np.ndarray]], strategy: Strategy,
                extras: PoolInputs | None = None) -> tuple[np.ndarray, np.ndarray, Ranking]:
    """(task ids, probs, ranking) of the merged shards, in pool order: what the unsharded path computes.

    `extras` carries what no shard computes: the labeled set's embeddings and labels, the classifier head.
    """
    task_ids = np.concatenate([p["task_ids"] for p in parts])
    probs = np.concatenate([p["probs"] for p in parts])
    if isinstance(strategy, ScoreStrategy):
        scores = np.concatenate([p["scores"] for p in parts])
        return task_ids, probs, Ranking(order=descending_order(scores), strategy=strategy.name, scores=scores)
    values: dict[str, Any] = {"probs": probs}
    for name in _ARRAYS[1:]:
        if all(name in p for p in parts):
            values[name] = np.concatenate([p[name] for p in parts])
    if extras is not None:
        values.update({k: getattr(extras, k) for k in ("labeled_embeddings", "labeled_labels", "head")
                       if getattr(extras, k) is not None})
        values["n_classes"] = extras.n_classes
    return task_ids, probs, strategy.rank(PoolInputs(**values))


def merge_shards(project: int, version: str, run: str, count: int, strategy_spec: dict) -> dict:
    """Merge the shards of run `run`, rank the whole pool, publish (unless a newer version serves by now)."""

    def body(ctx: JobContext) -> dict[str, Any]:
        store = store_for(ctx)
        try:
            if ctx.store.current_version() != version:
                return {"status": "stale", "reason": f"{ctx.store.current_version()} serves now, not {version}"}
            parts = [dict(np.load(io.BytesIO(store.get(shard_key(project, run, i))), allow_pickle=False))
                     for i in range(count)]
            artifact = ctx.models.get(project, version)
            strategy = build_strategy(strategy_spec)
            _, kind = ctx.project_kind()
            with ctx.phase("strategy"):
                task_ids, probs, ranking = merge_order(parts, strategy, _extras(ctx, kind, strategy, artifact))
            scored = Scored([int(t) for t in task_ids], ranking, probs.astype(np.float64), kind, artifact, version,
                            strategy, ctx.project_settings.label_threshold)
            return {"status": "published", "shards": count, **publish(ctx, scored)}
        finally:
            store.delete_prefix(f"project-{project}/shards/{run}")

    return run_job(project, "rescore", body)


def _extras(ctx: JobContext, kind: TaskKind, strategy: Strategy, artifact: Artifact) -> PoolInputs | None:
    """The labeled set's embeddings and labels (loaded here: the labeled set is small) and the head."""
    needs = needed_inputs(strategy, artifact) & (LABELED_INPUTS | {Input.HEAD})
    if isinstance(strategy, ScoreStrategy) or not needs:
        return None
    x_lab, y_lab = ctx.inputs(kind, [], artifact)[1], kind.encode([])
    if needs & LABELED_INPUTS:
        x_lab, y_lab = labeled_inputs(ctx, kind, artifact, ctx.task_sets(kind).labeled)
    return artifact.model.pool_inputs(x_lab[:0], frozenset(needs), x_lab, y_lab)
