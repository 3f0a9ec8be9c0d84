"""The model class behind the protocol, in the shape of label_studio_ml's LabelStudioMLBase.

`predict(tasks, context)` answers /predict and `fit(event, data)` answers /webhook, as in label_studio_ml,
so a model written for label_studio_ml ports by moving its two methods into a subclass of
`LabelStudioModel` and pointing LSAL_MODEL_CLASS at it (e.g. ``mypackage.models:MyModel``).
`ActiveLearningModel`, the default, answers from the project's model plugin and queues retraining.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from redis import Redis

from core.admin import retrain_due
from core.config import Settings
from core.label_config import UnsupportedConfigError, kind_of
from core.labeled_set import auto_label
from core.ls_client import ANNOTATION_ACTIONS
from backend.metrics import Metrics
from backend.predictor import UNTRAINED, Predictor
from core.queueing import Enqueued, enqueue
from core.store import ProjectStore
from plugins.kinds import TaskKind


@dataclass
class Services:
    """What a model instance may use: settings, Redis, the loaded-model predictor, metrics."""

    settings: Settings
    redis: Redis
    predictor: Predictor
    metrics: Metrics


class LabelStudioModel:
    """One project's model, as label_studio_ml shapes it: `setup`, `predict(tasks, context)`, `fit(event, data)`."""

    def __init__(self, project_id: int, label_config: str | None, services: Services) -> None:
        self.project_id, self.label_config, self.services = project_id, label_config, services

    @property
    def store(self) -> ProjectStore:
        return ProjectStore(self.services.redis, self.project_id)

    @property
    def model_version(self) -> str:
        """The version string Label Studio sees (a string: an int breaks Label Studio's /next)."""
        live = self.store.published()
        return live["model_version"] if live else UNTRAINED

    def setup(self) -> str:
        """Check the labeling config when Label Studio connects; return the model version."""
        return self.model_version

    def predict(self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None,
                **kwargs: Any) -> dict[str, Any]:
        """{'results': [one prediction per task, same order], 'model_version'}."""
        raise NotImplementedError

    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """React to a Label Studio event (ANNOTATION_CREATED, START_TRAINING, ...); never train in the request."""
        raise NotImplementedError


class ActiveLearningModel(LabelStudioModel):
    """Pre-annotations from the project's serving version; events counted and retrains queued (coalesced)."""

    def setup(self) -> str:
        if self.label_config:
            try:
                kind_of(self.label_config)
            except UnsupportedConfigError as exc:
                raise HTTPException(422, str(exc)) from None
        return self.model_version

    def predict(self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None,
                **kwargs: Any) -> dict[str, Any]:
        return self.services.predictor.predict(self.store, self.project_id, tasks, self.label_config,
                                               self.services.metrics)

    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        s, settings = self.store, self.services.settings
        if event in ANNOTATION_ACTIONS and auto_label(data.get("annotation") or {}, self._kind()):
            s.record_event(event, 1, changes=False)  # our own confident pre-label, saved by the worker
            return {"status": "ignored", "action": event, "reason": "a confident pre-label saved by lsal"}
        if event in ANNOTATION_ACTIONS:
            deleted = data.get("annotations") if isinstance(data.get("annotations"), list) else []
            count = len(deleted) or 1 if event == "ANNOTATIONS_DELETED" else 1
            changes = s.record_event(event, count)
            # Label Studio delivers each webhook once with a 1 s timeout, so events can be lost; the project
            # counters in every payload let a later event make up for the lost ones
            project = data.get("project") if isinstance(data.get("project"), dict) else {}
            pset = s.settings(settings.defaults)
            due = retrain_due(s, pset, project.get("num_tasks_with_annotations"))
            if due is None:
                return {"status": "recorded", "changes": changes, "retrain_every": pset.retrain_every}
            return self._queued("retrain", f"{due} changes", changes=changes)
        if event == "START_TRAINING":
            s.record_event(event, 1, changes=False)
            return self._queued("retrain", "start training")
        if event == "TASKS_CREATED":
            s.record_event(event, 1, changes=False)
            tasks = data.get("tasks") if isinstance(data.get("tasks"), list) else []
            ids = [t.get("id") for t in tasks if isinstance(t, dict)]
            ids = [i for i in ids if isinstance(i, int)]
            if ids and s.settings(settings.defaults).stream and s.published():
                return self._queued("score_new", f"{len(ids)} new tasks", ids, coalesce=False)
            return {"status": "recorded"}
        s.record_event(event, 1, changes=False)
        return {"status": "ignored", "action": event}

    def _kind(self) -> TaskKind | None:
        """The project's task kind from the label config Label Studio sent, None when it sent none or no kind
        serves it."""
        try:
            return kind_of(self.label_config) if self.label_config else None
        except UnsupportedConfigError:
            return None

    def _queued(self, kind: str, reason: str, *args: Any, coalesce: bool = True, **extra: Any) -> dict[str, Any]:
        settings = self.services.settings
        job: Enqueued = enqueue(self.services.redis, settings.queue, kind, self.project_id, *args,
                                coalesce=coalesce, timeout=settings.job_timeout_s, reason=reason)
        self.services.metrics.enqueued.labels(kind, str(job.created).lower()).inc()
        return {"status": "queued" if job.created else "coalesced", "job": job.job_id, **extra}


def load_model_class(path: str) -> type[LabelStudioModel]:
    """The class at 'package.module:Class' (or 'package.module.Class'); ValueError saying what is wrong."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"LSAL_MODEL_CLASS={path!r} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, LabelStudioModel)):
        raise ValueError(f"LSAL_MODEL_CLASS={path!r} is not a subclass of backend.model_api.LabelStudioModel")
    return cls
