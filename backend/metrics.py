"""Prometheus metrics of the backend (one registry per app, so tests can build several apps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    """The backend's counters, histograms and gauges."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("lsal_http_requests_total", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("lsal_http_request_seconds", "HTTP request latency", ["route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.webhooks = Counter("lsal_webhook_events_total", "webhook events", ["action"], registry=r)
        self.enqueued = Counter("lsal_jobs_enqueued_total", "jobs enqueued (created=false: coalesced)",
                                ["kind", "created"], registry=r)
        self.predicted = Counter("lsal_predicted_tasks_total", "tasks answered by /predict", ["outcome"],
                                 registry=r)
        self.model_loads = Counter("lsal_model_loads_total", "model artifacts read from disk", registry=r)
        self.queue_depth = Gauge("lsal_queue_depth", "jobs waiting in the RQ queue", registry=r)
        self.failed_jobs = Gauge("lsal_failed_jobs", "jobs in the RQ failed-job registry (worker failures)",
                                 registry=r)
        self.model_version = Gauge("lsal_model_version", "serving model version number", ["project"], registry=r)
        self.last_round = Gauge("lsal_last_round_seconds", "duration of the last job", ["project", "kind"],
                                registry=r)
