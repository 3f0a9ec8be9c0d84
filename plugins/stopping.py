"""When to stop labeling, from the history of rounds: budget, target metric, convergence, max uncertainty."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RoundRecord(BaseModel):
    """What one active-learning round left behind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: int = Field(ge=0, description="labeled items after this round")
    metric: float | None = Field(None, description="validation metric after this round (higher is better)")
    max_uncertainty: float | None = Field(None, description="largest uncertainty left in the unlabeled pool")


History = Sequence[RoundRecord]


def latest_metric(history: History) -> float | None:
    """The most recent metric that was measured."""
    return next((r.metric for r in reversed(history) if r.metric is not None), None)


def latest_uncertainty(history: History) -> float | None:
    """The most recent max uncertainty that was measured."""
    return next((r.max_uncertainty for r in reversed(history) if r.max_uncertainty is not None), None)


def best_metric_gain(history: History, patience: int) -> float | None:
    """How much the best metric rose over the last `patience` measured rounds (None: too few rounds)."""
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    metrics = [r.metric for r in history if r.metric is not None]
    if len(metrics) <= patience:
        return None
    return max(metrics) - max(metrics[:-patience])


def budget_exhausted(history: History, budget: int) -> bool:
    """The labeled set has reached the budget."""
    return bool(history) and history[-1].labels >= budget


def target_reached(history: History, target: float) -> bool:
    """The latest measured metric is at least the target."""
    metric = latest_metric(history)
    return metric is not None and metric >= target


def converged(history: History, min_gain: float, patience: int) -> bool:
    """The best metric improved by less than `min_gain` over the last `patience` measured rounds."""
    gain = best_metric_gain(history, patience)
    return gain is not None and gain < min_gain


def uncertainty_below(history: History, threshold: float) -> bool:
    """The latest max uncertainty of the pool is below the threshold: the model is sure of everything left."""
    uncertainty = latest_uncertainty(history)
    return uncertainty is not None and uncertainty < threshold


class StoppingRule(BaseModel):
    """The criteria a project stops on; each one is off when unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: int | None = Field(None, gt=0, le=10**9, description="stop once this many items are labeled")
    target: float | None = Field(None, allow_inf_nan=False,
                                 description="stop once the metric (a project's: its kind's primary held-out "
                                             "metric) reaches this value")
    min_gain: float | None = Field(None, gt=0, allow_inf_nan=False,
                                   description="convergence: stop once the best metric gains less than this")
    patience: int | None = Field(None, ge=1, le=10_000,
                                 description="convergence: how many measured rounds the gain is taken over")
    max_uncertainty: float | None = Field(None, ge=0, allow_inf_nan=False,
                                          description="stop once the pool's largest uncertainty (nats) is lower")

    def active(self) -> bool:
        """Whether any criterion is set."""
        return any(v is not None for v in self.model_dump().values())

    @model_validator(mode="after")
    def _convergence_needs_both(self) -> StoppingRule:
        if (self.min_gain is None) != (self.patience is None):
            raise ValueError("convergence needs both min_gain and patience (or neither)")
        return self


@dataclass(frozen=True)
class Stop:
    """A criterion that fired: its name (budget, target, convergence, uncertainty) and why, in words."""

    criterion: str
    reason: str


def first_stop(history: History, rule: StoppingRule) -> Stop | None:
    """The first criterion of `rule` that fires (budget, target, convergence, uncertainty), or None."""
    if rule.budget is not None and budget_exhausted(history, rule.budget):
        return Stop("budget", f"budget: {history[-1].labels} labels >= budget {rule.budget}")
    if rule.target is not None and target_reached(history, rule.target):
        return Stop("target", f"target: metric {latest_metric(history):.4g} >= target {rule.target:g}")
    convergence = rule.min_gain is not None and rule.patience is not None
    if convergence and converged(history, rule.min_gain, rule.patience):
        gain = best_metric_gain(history, rule.patience)
        return Stop("convergence", f"converged: the best metric gained {gain:.3g} < min_gain "
                                   f"{rule.min_gain:g} over the last {rule.patience} rounds")
    if rule.max_uncertainty is not None and uncertainty_below(history, rule.max_uncertainty):
        return Stop("uncertainty", f"uncertainty: max uncertainty {latest_uncertainty(history):.3g} < "
                                   f"{rule.max_uncertainty:g}")
    return None


def should_stop(history: History, rule: StoppingRule) -> str | None:
    """The reason of the first criterion of `rule` that fires (budget, target, convergence, uncertainty)."""
    stop = first_stop(history, rule)
    return stop.reason if stop else None
