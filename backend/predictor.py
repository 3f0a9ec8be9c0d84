"""/predict: pre-annotations from the project's serving model version, with the published priority as score."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import HTTPException
from redis import Redis
from redis.exceptions import RedisError

from core.config import Settings
from core.embeddings import embedder_for, encoder_of
from core.image_fetch import ImageFetcher
from core.inputs import load_inputs
from core.label_config import UnsupportedConfigError, kind_of
from core.credentials import client_for
from core.ls_client import LabelStudioClient, LabelStudioError
from backend.metrics import Metrics
from core.model_cache import ModelCache
from core.project_settings import ProjectSettings
from core.store import ProjectStore
from plugins.models.artifact import ArtifactError

UNTRAINED = "lsal-untrained"


def _task_id(task: dict[str, Any]) -> int | None:
    """A task's Label Studio id, for the embedding cache (None: the request did not say)."""
    value = task.get("id") if isinstance(task, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Predictor:
    """Answers /predict from a loaded model (one per project, reloaded only when a new version serves)."""

    def __init__(self, settings: Settings, models: ModelCache, redis: Redis) -> None:
        self.settings, self.models, self.redis = settings, models, redis
        self._fetchers: dict[int, ImageFetcher] = {}
        self._last_state: dict[int, tuple[str | None, str, ProjectSettings]] = {}

    def fetcher(self, project: int) -> ImageFetcher:
        """An image fetcher with the project's Label Studio client (None: only allow-listed hosts)."""
        try:
            client: LabelStudioClient | None = client_for(self.settings, self.redis, project)
        except LabelStudioError:
            client = None
        except RedisError:
            if project in self._fetchers:  # Redis briefly away: keep the client found before
                return self._fetchers[project]
            client = None
        held = self._fetchers.get(project)
        if held is None or held.ls is not client:
            held = self._fetchers[project] = ImageFetcher(self.settings, client)
        return held

    def _state(self, store: ProjectStore) -> tuple[str | None, str, ProjectSettings]:
        """(serving version, live model_version, settings) from Redis, or the last ones seen if Redis is down."""
        try:
            live = store.published()
            state = (store.current_version(), live["model_version"] if live else UNTRAINED,
                     store.settings(self.settings.defaults))
        except RedisError:
            if store.project not in self._last_state:
                raise
            return self._last_state[store.project]  # keep answering from the loaded model
        self._last_state[store.project] = state
        return state

    @staticmethod
    def _rank(store: ProjectStore, task_id: Any) -> dict[str, Any] | None:
        """The task's published rank, None when unknown or Redis is down."""
        if not isinstance(task_id, int):
            return None
        try:
            return store.task_rank(task_id)
        except RedisError:
            return None

    def predict(self, store: ProjectStore, project: int, tasks: list[dict[str, Any]], label_config: Any,
                metrics: Metrics | None = None) -> dict[str, Any]:
        """{'results': [one per task, same order], 'model_version'}; no results before the first version."""
        if label_config is not None and not isinstance(label_config, str):
            raise HTTPException(400, "label_config must be a string")
        try:
            kind = kind_of(label_config) if label_config else None
        except UnsupportedConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        version, model_version, pset = self._state(store)
        if version is None or not tasks:
            return {"results": [], "model_version": model_version}
        try:
            artifact = self.models.get(project, version)
        except ArtifactError as exc:
            raise HTTPException(503, f"model version {version} cannot be loaded: {exc}") from None
        if kind is None:
            raise HTTPException(400, "label_config is required")
        if list(kind.labels) != artifact.label_map:
            raise HTTPException(409, f"the labeling config's choices {list(kind.labels)} differ from those "
                                     f"model {version} was trained on {artifact.label_map}; retrain first")
        items = [(i, (t.get("data") or {}).get(kind.value_key)) for i, t in enumerate(tasks)]
        embedder = embedder_for(self.settings, project, encoder_of(artifact))
        ok, inputs, skipped = load_inputs(kind.input_type, self.fetcher(project), items, pset,
                                          pixel_budget=self.settings.request_max_pixels, embedder=embedder,
                                          cache_ids=[_task_id(t) for t in tasks])
        outputs = artifact.model.predict_proba(inputs) if len(ok) else np.zeros((0, len(artifact.label_map)))
        by_index = dict(zip(ok, outputs))
        reasons = {s.task: f"{s.reason}: {s.detail}" for s in skipped}
        results = []
        for i, task in enumerate(tasks):
            if i not in by_index:
                results.append({"result": [], "score": 1.0, "model_version": model_version,
                                "error": reasons.get(i, f"no {kind.input_type}")})
                continue
            output = by_index[i]
            result = kind.regions(output, pset.label_threshold)
            seen = kind.summary(output, pset.label_threshold)
            ranked = self._rank(store, task.get("id"))
            # the score is the task's place in the published order (lowest = label first); a task the order
            # does not know yet goes after the ranked ones, more uncertain ones first
            score = ranked["score"] if ranked else 2.0 - seen["uncertainty"] / max(kind.max_uncertainty(), 1e-12)
            if result:
                result[0]["meta"] = {"text": [f"lsal: confidence {seen['confidence']:.3f}; "
                                              f"{kind.uncertainty_name} {seen['uncertainty']:.3f}"]}
            results.append({"result": result, "score": float(score), "model_version": model_version})
        if metrics is not None:
            metrics.predicted.labels("ok").inc(len(ok))
            metrics.predicted.labels("skipped").inc(len(tasks) - len(ok))
        return {"results": results, "model_version": model_version}
