"""Scoring: the project's strategy over a pool of tasks with a served model version, for the project's kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from plugins.kinds import TaskKind
from plugins.models.artifact import Artifact
from plugins.strategies import Input, Ranking, Strategy
from worker.context import JobContext

LABELED_INPUTS = frozenset({Input.LABELED_EMBEDDINGS, Input.LABELED_LABELS})


@dataclass
class Scored:
    """A strategy's ranking of a set of tasks, with the model outputs humans read per task."""

    task_ids: list[int]
    ranking: Ranking
    outputs: np.ndarray  # (N, ...) the model's per-task output (class or label probabilities; Detections)
    kind: TaskKind
    artifact: Artifact
    version: str
    strategy: Strategy
    threshold: float = 0.5  # multi-label: ticked at this probability

    def uncertainty(self) -> np.ndarray:
        """Each task's uncertainty under its kind (nats)."""
        return self.kind.uncertainty(self.outputs)

    def summary(self, i: int) -> dict[str, Any]:
        """What a person reads about task i's prediction (label, confidence, uncertainty)."""
        return self.kind.summary(self.outputs[i], self.threshold)


def project_strategy(ctx: JobContext, kind: TaskKind) -> Strategy:
    """The project's strategy, refused (ValueError) when it has no sound form for the project's kind."""
    strategy = ctx.project_settings.build_strategy()
    kind.check_strategy(strategy)
    return strategy


def needed_inputs(strategy: Strategy, artifact: Artifact) -> frozenset[Input]:
    """What the model computes for `strategy`: its required inputs, the optional ones it provides, probs."""
    return frozenset(strategy.required_inputs() | (strategy.optional_inputs() & artifact.model.provides)
                     | ({Input.PROBS} & artifact.model.provides))


def labeled_inputs(ctx: JobContext, kind: TaskKind, artifact: Artifact,
                   labeled: list[tuple[int, Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The labeled tasks' model inputs and encoded targets (for strategies that read the labeled set)."""
    ids, x, _ = ctx.inputs(kind, [(t, v) for t, v, _ in labeled], artifact)
    answer_of = {t: a for t, _, a in labeled}
    return x, kind.encode([answer_of[t] for t in ids])


def stale_model(kind: TaskKind, artifact: Artifact, version: str) -> str | None:
    """Why `version` cannot score this project any more (its labels are not the config's), or None."""
    if list(kind.labels) != artifact.label_map or artifact.extra.get("kind", {}).get("kind", kind.name) != kind.name:
        return (f"model {version} was trained on {artifact.label_map} ({artifact.extra.get('kind', {}).get('kind')}), "
                f"the labeling config now has {list(kind.labels)} ({kind.name}); the next retrain fixes it")
    return None


def score_tasks(ctx: JobContext, version: str, pool: list[tuple[int, Any]], kind: TaskKind,
                labeled: list[tuple[int, Any, Any]]) -> Scored:
    """Rank `pool` ((task, value) pairs) with the project's strategy and model version `version`."""
    settings = ctx.project_settings
    artifact = ctx.models.get(ctx.project, version)
    strategy = project_strategy(ctx, kind)
    needs = needed_inputs(strategy, artifact)
    with ctx.phase("load_inputs"):
        ids, x_pool, skipped = ctx.inputs(kind, pool, artifact)
        x_lab, y_lab = x_pool[:0], kind.encode([])
        if needs & LABELED_INPUTS and labeled:
            x_lab, y_lab = labeled_inputs(ctx, kind, artifact, labeled)
    ctx.store.set_info(score_skipped=[s.__dict__ for s in skipped[:50]])
    with ctx.phase("inference"):
        inputs = artifact.model.pool_inputs(x_pool, needs, x_lab, y_lab)
    with ctx.phase("strategy"):
        ranking = strategy.rank(inputs)
    # a classifier's pool probabilities are its outputs; a detector returns its Detections beside its inputs
    if inputs.probs is not None:
        outputs = np.asarray(inputs.probs, dtype=np.float64)
    else:
        outputs = inputs.outputs if inputs.outputs is not None else artifact.model.predict_proba(x_pool)
    return Scored(ids, ranking, outputs, kind, artifact, version, strategy, settings.label_threshold)
