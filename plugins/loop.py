"""The offline active-learning loop of the seeds: train on L, rank U, the oracle labels the top B, repeat."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score

from plugins.models import ModelPlugin
from plugins.strategies import Strategy
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
) -> list[RoundResult]:
    """Run the loop; the oracle reveals y_pool only for the items the strategy ranks first.

    With `pool_subsample`, each round scores a fresh random subset of that many unlabeled items
    (Gal et al. 2017 score 2,000 per round) instead of the whole pool. `label` names the run in the
    results (default: the strategy's name).
    """
    n_classes = int(max(y_pool.max(), y_test.max())) + 1
    rng = np.random.default_rng([seed, 1])
    labeled = initial_indices(y_pool, initial, seed)
    unlabeled = np.setdiff1d(np.arange(len(y_pool)), labeled)
    results: list[RoundResult] = []
    history: list[RoundRecord] = []
    for round_no in range(rounds + 1):
        started = time.perf_counter()
        model = make_model()
        trained = model.fit(x_pool[labeled], y_pool[labeled])
        pred = model.predict_proba(x_test).argmax(axis=1)
        accuracy = float(accuracy_score(y_test, pred))
        macro_f1 = float(f1_score(y_test, pred, average="macro", zero_division=0))
        recall = recall_score(y_test, pred, labels=np.arange(n_classes), average=None, zero_division=0)
        ranking = None
        candidates = unlabeled
        if pool_subsample is not None and len(unlabeled) > pool_subsample:
            candidates = np.sort(rng.choice(unlabeled, size=pool_subsample, replace=False))
        if round_no < rounds and len(unlabeled):
            needs = strategy.required_inputs() | (strategy.optional_inputs() & model.provides)
            inputs = model.pool_inputs(x_pool[candidates], needs, x_pool[labeled], y_pool[labeled])
            ranking = strategy.rank(inputs)
            max_unc = _entropy_max(inputs.probs)
        else:
            max_unc = _entropy_max(model.predict_proba(x_pool[candidates]))
        history.append(RoundRecord(labels=len(labeled), metric=accuracy, max_uncertainty=max_unc))
        reason = should_stop(history, stopping) if stopping else None
        result = RoundResult(label or strategy.name, seed, round_no, len(labeled), accuracy, macro_f1, max_unc,
                             time.perf_counter() - started, tuple(float(r) for r in recall),
                             tuple(int(c) for c in np.bincount(y_pool[labeled], minlength=n_classes)), reason,
                             fit_metrics(trained))
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
