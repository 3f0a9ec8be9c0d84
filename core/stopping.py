"""Stopping criteria in the service: the project's rule over its rounds (one per version), after every
retrain and rescore; a spent budget also stops retraining (the published order stays live)."""

from __future__ import annotations

import time
from typing import Any

from core.store import ProjectStore
from plugins.stopping import RoundRecord, Stop, StoppingRule, first_stop


def rounds(store: ProjectStore) -> list[RoundRecord]:
    """One round per trained version: its labels, its primary held-out metric, the largest uncertainty its
    latest publication saw in the pool."""
    uncertainty: dict[str, float] = {}
    for publication in store.publications():
        if isinstance(publication.get("max_uncertainty"), (int, float)):
            uncertainty[publication["version"]] = float(publication["max_uncertainty"])
    out = []
    for version in store.versions():
        metrics = version.get("metrics") or {}
        metric = metrics.get(version.get("primary_metric") or "holdout_accuracy")
        out.append(RoundRecord(labels=int(version.get("labeled") or 0),
                               metric=float(metric) if isinstance(metric, (int, float)) else None,
                               max_uncertainty=uncertainty.get(version["version"])))
    return out


def evaluate(store: ProjectStore, rule: StoppingRule, after: str) -> dict[str, Any] | None:
    """Evaluate `rule` over the project's rounds and record the outcome for status (None: no rule set)."""
    if not rule.active():
        store.set_info(stopping=None)
        return None
    history = rounds(store)
    stop = first_stop(history, rule) if history else None
    record = {"fired": stop is not None, "criterion": stop.criterion if stop else None,
              "reason": stop.reason if stop else None, "after": after, "at": time.time(),
              "version": store.current_version(), "labels": history[-1].labels if history else 0,
              "rule": rule.model_dump(mode="json", exclude_none=True)}
    store.set_info(stopping=record)
    return record


def budget_spent(store: ProjectStore, rule: StoppingRule) -> Stop | None:
    """The budget stop when a version was trained on at least the budget's labels (None: not spent)."""
    versions = store.versions()
    if rule.budget is None or not versions:
        return None
    labeled = max(int(v.get("labeled") or 0) for v in versions)
    if labeled < rule.budget:
        return None
    return Stop("budget", f"budget: {labeled} labels >= budget {rule.budget}; retraining stopped (raise "
                          "stopping.budget to train again)")
