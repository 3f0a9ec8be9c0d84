"""What a job needs: settings, Redis, the project's store, Label Studio, images, progress reporting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import get_current_job
from rq.job import Job

from core.config import Settings, get_settings
from core.credentials import client_for
from core.image_fetch import ImageFetcher
from core.ls_client import LabelStudioClient
from core.model_cache import ModelCache
from core.project_settings import ProjectSettings
from core.store import ProjectStore

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

    def fetcher(self) -> ImageFetcher:
        return ImageFetcher(self.settings, self.ls)

    def progress(self, **values: Any) -> None:
        """Put progress (phase, epoch, loss, ...) in the RQ job's meta."""
        if self.job is None:
            return
        self.job.meta.update({k: v for k, v in values.items() if v is not None})
        self.job.meta["updated_at"] = time.time()
        try:
            self.job.save_meta()
        except Exception:  # progress is best effort; never fail a training because Redis blinked
            pass

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the job (shown in `lsal status` as the last round's timings)."""
        self.progress(phase=name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 3)

    def close(self) -> None:
        """Nothing to release: Label Studio clients are shared per process (see core.credentials)."""
