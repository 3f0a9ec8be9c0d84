"""Stopping criteria in the service (core.stopping) over a project's versions and publications, in Redis."""

from __future__ import annotations

from redis import Redis

from core.admin import retrain_due
from core.project_settings import ProjectSettings
from core.stopping import budget_spent, evaluate, rounds
from core.store import ProjectStore
from plugins.stopping import StoppingRule


def _version(store: ProjectStore, name: str, labeled: int, f1: float, metric: str = "holdout_micro_f1") -> None:
    store.add_version({"version": name, "labeled": labeled, "metrics": {metric: f1, "holdout_accuracy": 0.1},
                       "primary_metric": metric})


def _published(store: ProjectStore, version: str, max_uncertainty: float) -> None:
    store.set_published({"model_version": f"lsal-{version}-x-p1", "version": version,
                         "max_uncertainty": max_uncertainty}, {})


def test_rounds_read_each_versions_primary_metric_and_its_publications_uncertainty(redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 7)
    _version(store, "v1", 10, 0.5)
    _published(store, "v1", 2.0)
    _version(store, "v2", 20, 0.7)
    history = rounds(store)
    assert [(r.labels, r.metric, r.max_uncertainty) for r in history] == [(10, 0.5, 2.0), (20, 0.7, None)]


def test_evaluate_records_which_criterion_fired_and_why_for_status(redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 7)
    rule = StoppingRule(target=0.65, budget=100)
    _version(store, "v1", 10, 0.5)
    record = evaluate(store, rule, after="retrain v1")
    assert record["fired"] is False and store.info()["stopping"] == record
    _version(store, "v2", 20, 0.7)  # the primary metric is micro-F1 here, not accuracy (0.1)
    record = evaluate(store, rule, after="retrain v2")
    assert record["fired"] and record["criterion"] == "target" and "0.7 >= target 0.65" in record["reason"]
    assert record["version"] == "v2" and record["labels"] == 20
    assert evaluate(store, StoppingRule(), after="retrain v2") is None and store.info()["stopping"] is None


def test_the_uncertainty_criterion_fires_on_what_the_last_publication_saw(redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 7)
    _version(store, "v1", 10, 0.5)
    rule = StoppingRule(max_uncertainty=0.3)
    _published(store, "v1", 0.9)
    assert not evaluate(store, rule, after="publication")["fired"]
    _published(store, "v1", 0.2)
    assert evaluate(store, rule, after="publication")["criterion"] == "uncertainty"


def test_a_spent_budget_makes_no_retrain_due_until_the_budget_is_raised(redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 7)
    settings = ProjectSettings(retrain_every=5, min_labels=10, stopping={"budget": 20})
    _version(store, "v1", 10, 0.5)
    store.set_trained_count(10)
    store.record_event("ANNOTATION_CREATED", 12)
    assert budget_spent(store, settings.stopping) is None
    assert retrain_due(store, settings, labeled=22) == 12
    _version(store, "v2", 21, 0.6)
    spent = budget_spent(store, settings.stopping)
    assert spent.criterion == "budget" and "21 labels >= budget 20" in spent.reason
    assert retrain_due(store, settings, labeled=40) is None
    raised = settings.model_copy(update={"stopping": StoppingRule(budget=50)})
    assert retrain_due(store, raised, labeled=40) == 30
