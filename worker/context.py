"""What a job needs: settings, Redis, the project's store, Label Studio, its task kind and inputs, progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job
from rq.job import Job

from core.config import Settings, get_settings
from core.credentials import client_for
from core.embeddings import embedder_for, encoder_of
from core.image_fetch import ImageFetcher, Skipped
from core.inputs import load_inputs
from core.label_config import kind_of
from core.labeled_set import TaskSets, split_tasks
from core.ls_client import LabelStudioClient
from core.model_cache import ModelCache
from core.project_settings import ProjectSettings
from core.store import ProjectStore
from plugins.kinds import TaskKind
from plugins.models.artifact import Artifact
from worker.locking import Lease

log = logging.getLogger("lsal.worker")
_CACHES: dict[str, ModelCache] = {}


@dataclass
class JobContext:
    """One job's view of the world for one project."""

    project: int
    settings: Settings
    redis: Redis
    ls: LabelStudioClient
    job: Job | None
    timings: dict[str, float] = field(default_factory=dict)
    lease: Lease | None = None  # the project lock, while the job holds it

    @classmethod
    def create(cls, project: int) -> JobContext:
        """The context of the current RQ job (or of a direct call, from the environment)."""
        settings = get_settings()
        job = get_current_job()
        redis = job.connection if job is not None else Redis.from_url(settings.redis_url)
        return cls(project, settings, redis, client_for(settings, redis, project), job)

    @property
    def store(self) -> ProjectStore:
        return ProjectStore(self.redis, self.project)

    @property
    def project_settings(self) -> ProjectSettings:
        return self.store.settings(self.settings.defaults)

    @property
    def models(self) -> ModelCache:
        key = str(self.settings.model_dir)
        if key not in _CACHES:
            _CACHES[key] = ModelCache(self.settings.model_dir)
        return _CACHES[key]

    def check_lock(self) -> None:
        """Raise LockLostError when the job no longer holds the project's lock (call before every write)."""
        if self.lease is not None:
            self.lease.check()

    def project_kind(self) -> tuple[dict[str, Any], TaskKind]:
        """The project as Label Studio has it, and its task kind (from the labeling config)."""
        project = self.ls.project(self.project)
        return project, kind_of(project.get("label_config") or "")

    def task_sets(self, kind: TaskKind, ids: set[int] | None = None) -> TaskSets:
        """The project's (or only the tasks `ids`') labeled and unlabeled tasks."""
        return split_tasks(self.ls.tasks(self.project, ids=ids), kind)

    def inputs(self, kind: TaskKind, items: list[tuple[int, Any]],
               artifact: Artifact | None = None) -> tuple[list[int], np.ndarray, list[Skipped]]:
        """Load (task, value) pairs as model input: (ids loaded, inputs, skipped); with the project's encoder,
        its cached embeddings (the tasks the cache lacks are fetched, encoded and cached); for `artifact`'s
        model, the inputs it was trained on (the encoder it recorded)."""
        fetcher = ImageFetcher(self.settings, self.ls)
        pset = self.project_settings
        spec = pset.encoder if artifact is None else encoder_of(artifact)
        embedder = embedder_for(self.settings, self.project, spec,
                                lambda phase, done, total: self.progress(embedded=done, to_embed=total))
        try:
            return load_inputs(kind.input_type, fetcher, items, pset, embedder=embedder)
        finally:
            fetcher.close()

    def progress(self, **values: Any) -> None:
        """Put progress (phase, epoch, loss, ...) in the RQ job's meta (best effort: Redis may blink); a job that
        lost its lock stops here (LockLostError), at its next report, instead of training on for nothing."""
        self.check_lock()
        if self.job is None:
            return
        self.job.meta.update({k: v for k, v in values.items() if v is not None})
        self.job.meta["updated_at"] = time.time()
        try:
            self.job.save_meta()
        except RedisError as exc:
            log.debug("project %s: progress not saved (%s)", self.project, type(exc).__name__)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the job (shown in `lsal status` as the last round's timings)."""
        self.progress(phase=name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 3)
