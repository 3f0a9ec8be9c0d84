"""The offline active-learning loop of the seeds: train on L, rank U, the oracle labels the top B, repeat."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score

from plugins.holdout import assign_holdout, split_indices
from plugins.kinds import TaskKind
from plugins.models import ModelPlugin
from plugins.promotion import GateRule, accuracy, class_shares, judge
from plugins.strategies import PoolInputs, Strategy
from plugins.stopping import RoundRecord, StoppingRule, should_stop

# Training metrics of each round's fit kept in the results (NaN where a model does not report one), to
# catch a bad fit behind a dip in a learning curve.
FIT_METRICS = ("train_loss", "train_accuracy", "val_accuracy", "epochs_run", "best_epoch", "stopped_early")


@dataclass(frozen=True)
class RoundResult:
    """What one round of the loop measured."""

    strategy: str
    seed: int
    round: int
    labels: int
    accuracy: float
    macro_f1: float
    max_uncertainty: float
    seconds: float
    recall: tuple[float, ...] = ()  # test recall per class
    labeled_per_class: tuple[int, ...] = ()  # labels of each class found so far
    stop_reason: str | None = None
    fit: tuple[float, ...] = (math.nan,) * len(FIT_METRICS)  # the fit's metrics named in FIT_METRICS
    promoted: bool | None = None  # the promotion gate served this round's model (None: no gate)

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        """Flat dict for a CSV row: per-class values become recall_<class> and labeled_<class> columns,
        the fit's metrics fit_<metric> columns."""
        row = asdict(self)
        names = class_names or [str(c) for c in range(len(self.recall))]
        for key in ("recall", "labeled_per_class"):
            values = row.pop(key)
            prefix = "recall" if key == "recall" else "labeled"
            row.update({f"{prefix}_{name}": v for name, v in zip(names, values)})
        row.update({f"fit_{name}": v for name, v in zip(FIT_METRICS, row.pop("fit"))})
        return row


def fit_metrics(metrics: dict[str, float] | None) -> tuple[float, ...]:
    """A fit's metrics in FIT_METRICS order, NaN for those it did not report."""
    metrics = metrics or {}
    return tuple(float(metrics.get(name, math.nan)) for name in FIT_METRICS)


def initial_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n random pool indices, balanced over classes (n // C of each, the remainder at random)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per_class = n // len(classes)
    first = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes]
    chosen = np.concatenate(first).astype(np.int64) if first else np.zeros(0, dtype=np.int64)
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), chosen))[: max(0, n - len(chosen))]
    return np.concatenate([chosen, rest.astype(np.int64)])


@dataclass(frozen=True)
class Measure:
    """What a round measured on the test set: the primary metric, a second one, one value per class."""

    primary: float
    secondary: float
    per_class: tuple[float, ...]


class LoopTask:
    """How the loop measures a round and counts labels: single-label classification (this class) or a task
    kind's form of it (`KindTask`, e.g. object detection)."""

    metric_name = "test accuracy"

    def measure(self, model: ModelPlugin, x_test: np.ndarray, y_test: np.ndarray, n_classes: int) -> Measure:
        """Accuracy, macro-F1 and per-class recall of the model on the test set."""
        pred = model.predict_proba(x_test).argmax(axis=1)
        recall = recall_score(y_test, pred, labels=np.arange(n_classes), average=None, zero_division=0)
        return Measure(float(accuracy_score(y_test, pred)),
                       float(f1_score(y_test, pred, average="macro", zero_division=0)),
                       tuple(float(r) for r in recall))

    def strata(self, y: np.ndarray) -> np.ndarray:
        """Groups the first labels are balanced over."""
        return np.asarray(y)

    def counts(self, y: np.ndarray, n_classes: int) -> tuple[int, ...]:
        """Labels of each class among `y`."""
        return tuple(int(c) for c in np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes))

    def max_uncertainty(self, model: ModelPlugin, inputs: PoolInputs | None, x: np.ndarray) -> float:
        """The largest uncertainty left among the scored items (the max-uncertainty stopping signal)."""
        return _entropy_max(inputs.probs if inputs is not None and inputs.probs is not None
                            else model.predict_proba(x))

    gate_resamples = 500  # the promotion gate's paired bootstrap resamples

    def gate_metric(self) -> Callable[[Any, Any], float]:
        """The figure the promotion gate compares: held-out accuracy."""
        return accuracy

    def no_model_outputs(self, y_train: np.ndarray, n: int, n_classes: int) -> Any | None:
        """The no-model baseline the first model must not fall below: the training labels' class shares."""
        return class_shares(y_train, n, n_classes)


@dataclass(frozen=True)
class KindTask(LoopTask):
    """The loop for a task kind (plugins.kinds): its primary held-out metric, its strata and label counts."""

    kind: TaskKind
    secondary_metric: str = ""
    per_class_prefix: str = ""
    threshold: float = 0.5

    @property
    def metric_name(self) -> str:  # type: ignore[override]
        return "test " + self.kind.primary_metric.removeprefix("holdout_")

    def measure(self, model: ModelPlugin, x_test: np.ndarray, y_test: np.ndarray, n_classes: int) -> Measure:
        metrics = self.kind.metrics(y_test, model.predict_proba(x_test), self.threshold)
        per_class = tuple(float(metrics.get(f"{self.per_class_prefix}{label}", math.nan))
                          for label in self.kind.labels)
        return Measure(float(metrics.get(self.kind.primary_metric, math.nan)),  # undefined: no true box held out
                       float(metrics.get(self.secondary_metric, math.nan)), per_class)

    def strata(self, y: np.ndarray) -> np.ndarray:
        return self.kind.strata(y)

    def counts(self, y: np.ndarray, n_classes: int) -> tuple[int, ...]:
        counts = self.kind.label_counts(y)
        return tuple(int(counts.get(label, 0)) for label in self.kind.labels)

    def max_uncertainty(self, model: ModelPlugin, inputs: PoolInputs | None, x: np.ndarray) -> float:
        if not len(x):
            return 0.0
        return float(np.max(self.kind.uncertainty(model.predict_proba(x))))

    @property
    def gate_resamples(self) -> int:  # type: ignore[override]
        return self.kind.gate_resamples

    def gate_metric(self) -> Callable[[Any, Any], float]:
        return self.kind.gate_metric(self.threshold)

    def no_model_outputs(self, y_train: np.ndarray, n: int, n_classes: int) -> Any | None:
        return self.kind.no_model_outputs(y_train, n)


CLASSIFICATION = LoopTask()


def run_loop(
    make_model: Callable[[], ModelPlugin],
    strategy: Strategy,
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    initial: int,
    batch: int,
    rounds: int,
    seed: int = 0,
    pool_subsample: int | None = None,
    label: str | None = None,
    stopping: StoppingRule | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
    task: LoopTask = CLASSIFICATION,
    n_classes: int | None = None,
    gate: GateRule | None = None,
) -> list[RoundResult]:
    """Run the loop; the oracle reveals y_pool only for the items the strategy ranks first.

    With `gate` (the service's promotion gate), a stable `gate.fraction` of the labels is held out, each
    round's model trains on the rest, and it replaces the served model only when it is not worse beyond noise
    on the held-out labels (plugins.promotion); the served model is measured and ranks the pool, as annotators
    would get it.

    With `pool_subsample`, each round scores a fresh random subset of that many unlabeled items
    (Gal et al. 2017 score 2,000 per round) instead of the whole pool. `label` names the run in the
    results (default: the strategy's name). `task` says how a round is measured (classification by
    default; a `KindTask` for another task kind, whose RoundResult.accuracy is the kind's primary metric).
    """
    n_classes = n_classes or int(max(y_pool.max(), y_test.max())) + 1
    rng = np.random.default_rng([seed, 1])
    labeled = initial_indices(task.strata(y_pool), initial, seed)
    unlabeled = np.setdiff1d(np.arange(len(y_pool)), labeled)
    results: list[RoundResult] = []
    history: list[RoundRecord] = []
    sides: dict[int, bool] = {}
    served: ModelPlugin | None = None
    for round_no in range(rounds + 1):
        started = time.perf_counter()
        promoted = None
        if gate is None:
            model = make_model()
            trained = model.fit(x_pool[labeled], y_pool[labeled])
        else:
            sides = assign_holdout(labeled.tolist(), task.strata(y_pool[labeled]), gate.fraction, seed, sides)
            train_pos, held_pos = split_indices(labeled.tolist(), sides)
            fit_idx, held_idx = labeled[train_pos], labeled[held_pos]
            candidate = make_model()
            trained = candidate.fit(x_pool[fit_idx], y_pool[fit_idx])
            promoted = True  # as the service: nothing held out, nothing to compare on
            if len(held_idx):
                against = served.predict_proba(x_pool[held_idx]) if served is not None else \
                    task.no_model_outputs(y_pool[fit_idx], len(held_idx), n_classes)
                promoted = judge("held-out", task.gate_metric(), y_pool[held_idx],
                                 candidate.predict_proba(x_pool[held_idx]), against, "served",
                                 gate.level, gate.margin, min(gate.resamples, task.gate_resamples), seed).promote
            served = candidate if promoted or served is None else served
            model = served
        measured = task.measure(model, x_test, y_test, n_classes)
        ranking = None
        candidates = unlabeled
        if pool_subsample is not None and len(unlabeled) > pool_subsample:
            candidates = np.sort(rng.choice(unlabeled, size=pool_subsample, replace=False))
        if round_no < rounds and len(unlabeled):
            needs = strategy.required_inputs() | (strategy.optional_inputs() & model.provides)
            inputs = model.pool_inputs(x_pool[candidates], needs, x_pool[labeled], y_pool[labeled])
            ranking = strategy.rank(inputs)
            max_unc = task.max_uncertainty(model, inputs, x_pool[candidates])
        else:
            max_unc = task.max_uncertainty(model, None, x_pool[candidates])
        history.append(RoundRecord(labels=len(labeled), metric=measured.primary, max_uncertainty=max_unc))
        reason = should_stop(history, stopping) if stopping else None
        result = RoundResult(label or strategy.name, seed, round_no, len(labeled), measured.primary,
                             measured.secondary, max_unc, time.perf_counter() - started, measured.per_class,
                             task.counts(y_pool[labeled], n_classes), reason, fit_metrics(trained), promoted)
        results.append(result)
        if on_round:
            on_round(result)
        if ranking is None or reason:
            break
        picked = candidates[ranking.order[:batch]]
        labeled = np.concatenate([labeled, picked])
        unlabeled = np.setdiff1d(unlabeled, picked)
    return results


def _entropy_max(probs: np.ndarray | torch.Tensor) -> float:
    """The largest predictive entropy in the pool (the seeds' max-uncertainty stopping signal)."""
    if not len(probs):
        return 0.0
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return float((-(p * np.log(p)).sum(axis=1)).max())
