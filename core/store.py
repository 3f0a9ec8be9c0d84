"""Project state kept in Redis: settings, annotation-change counters, model versions, the published ranking.

Keys live under ``lsal:p:<project>:``. Values are JSON. Model weights are not here: they are artifact files
under MODEL_DIR, and Redis only records which versions exist and which one serves.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

from core.project_settings import ProjectSettings, validate_settings

PROJECTS_KEY = "lsal:projects"
AUDIT_KEEP = 1000  # audit records kept per project
_VERSION = re.compile(r"v([1-9][0-9]{0,8})")


def version_number(name: object) -> int | None:
    """The number of a model version name ('v12' -> 12); None for anything else (never a path)."""
    match = _VERSION.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


def now() -> float:
    """Wall-clock seconds (a function, so records share one clock)."""
    return time.time()


@dataclass(frozen=True)
class ProjectStore:
    """Typed access to one project's keys."""

    redis: Redis
    project: int

    def key(self, name: str) -> str:
        """The Redis key `name` of this project."""
        return f"lsal:p:{self.project}:{name}"

    # -- settings --------------------------------------------------------------------------------------
    def settings(self, defaults: ProjectSettings) -> ProjectSettings:
        """The project's settings: what an admin stored, else `defaults`."""
        raw = self.redis.get(self.key("settings"))
        return defaults if raw is None else ProjectSettings.model_validate_json(raw)

    def stored_settings(self) -> dict[str, Any] | None:
        """The raw settings an admin stored, or None."""
        raw = self.redis.get(self.key("settings"))
        return None if raw is None else json.loads(raw)

    def seed_settings(self, settings: ProjectSettings) -> bool:
        """Store `settings` unless the project has settings already; True when they were stored."""
        settings = validate_settings(settings)
        stored = bool(self.redis.set(self.key("settings"), settings.model_dump_json(), nx=True))
        if stored:
            self.redis.sadd(PROJECTS_KEY, self.project)
        return stored

    def set_settings(self, settings: ProjectSettings) -> ProjectSettings:
        """Validate and store `settings` (InvalidSettingsError leaves the old ones in force)."""
        settings = validate_settings(settings)
        pipe = self.redis.pipeline()
        pipe.set(self.key("settings"), settings.model_dump_json())
        pipe.sadd(PROJECTS_KEY, self.project)
        pipe.execute()
        return settings

    # -- annotation events -----------------------------------------------------------------------------
    def record_event(self, action: str, count: int = 1, changes: bool = True) -> int:
        """Count a webhook event; return the annotation changes not yet taken by a training job."""
        pipe = self.redis.pipeline()
        pipe.sadd(PROJECTS_KEY, self.project)
        pipe.hincrby(self.key("events"), action, count)
        pipe.hset(self.key("info"), "last_event_at", now())
        pipe.incrby(self.key("changes"), count if changes else 0)
        return int(pipe.execute()[-1])

    def take_changes(self) -> int:
        """Mark the changes counted so far as taken by the job starting now; return how many."""
        taken = int(self.redis.get(self.key("changes")) or 0)
        if taken:
            self.redis.decrby(self.key("changes"), taken)
        return taken

    def give_back_changes(self, count: int) -> None:
        """Return changes a failed job took, so the next event triggers a retrain again."""
        if count:
            self.redis.incrby(self.key("changes"), count)

    def pending_changes(self) -> int:
        """Annotation changes since the last training job started."""
        return int(self.redis.get(self.key("changes")) or 0)

    def set_trained_count(self, labeled: int) -> None:
        """Record how many tasks had annotations when the newest version's training read them."""
        self.redis.set(self.key("trained_count"), int(labeled))

    def add_trained_count(self, n: int) -> None:
        """Count `n` tasks as annotated without a new label to train on (our saved confident pre-labels), so
        that Label Studio's annotated-task counter does not make a retrain due for them."""
        self.redis.incrby(self.key("trained_count"), int(n))

    def trained_count(self) -> int:
        """Tasks with annotations that the newest version was trained from (0 before the first)."""
        return int(self.redis.get(self.key("trained_count")) or 0)

    def events(self) -> dict[str, int]:
        """Webhook events received, by action."""
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self.key("events")).items()}

    # -- model versions --------------------------------------------------------------------------------
    def next_version(self, at_least: int = 1) -> str:
        """A new, never reused model version name ('v1', 'v2', ...), numbered `at_least` or higher.

        Callers hold the project lock; `at_least` (one past the newest artifact on disk) keeps the numbers
        increasing even when Redis lost its data.
        """
        number = int(self.redis.incr(self.key("version_seq")))
        if number < at_least:
            self.redis.set(self.key("version_seq"), at_least)
            number = at_least
        return f"v{number}"

    def next_publication(self) -> int:
        """A new publication number (every rescore publishes under a fresh Label Studio model_version)."""
        return int(self.redis.incr(self.key("publication_seq")))

    def add_version(self, record: dict[str, Any], serve: bool = True) -> None:
        """Record a trained version (name, path, metrics, ...) and, with `serve`, make it the serving one."""
        pipe = self.redis.pipeline()
        pipe.hset(self.key("versions"), record["version"], json.dumps(record))
        if serve:
            pipe.set(self.key("current"), record["version"])
        pipe.sadd(PROJECTS_KEY, self.project)
        pipe.execute()

    def holdout_sides(self, fraction: float) -> dict[int, bool]:
        """The stable held-out assignment {task: held out?} made for `fraction` (empty for another fraction)."""
        raw = self.redis.get(self.key("holdout"))
        data = json.loads(raw) if raw else {}
        if not isinstance(data, dict) or data.get("fraction") != fraction:
            return {}
        return {int(t): bool(h) for t, h in (data.get("sides") or {}).items()}

    def set_holdout_sides(self, fraction: float, sides: dict[int, bool]) -> None:
        """Keep the held-out assignment made for `fraction`."""
        self.redis.set(self.key("holdout"), json.dumps({"fraction": fraction,
                                                        "sides": {str(t): int(h) for t, h in sides.items()}}))

    def versions(self) -> list[dict[str, Any]]:
        """Every recorded version, oldest first (records whose name is not v<number> are left out)."""
        records = [json.loads(v) for v in self.redis.hvals(self.key("versions"))]
        records = [r for r in records if isinstance(r, dict) and version_number(r.get("version")) is not None]
        return sorted(records, key=lambda r: version_number(r["version"]))

    def version(self, name: str) -> dict[str, Any] | None:
        """The record of version `name`, or None."""
        if version_number(name) is None:
            return None
        raw = self.redis.hget(self.key("versions"), name)
        return None if raw is None else json.loads(raw)

    def current_version(self) -> str | None:
        """The model version that serves /predict and the next rescore (None, also for a malformed name)."""
        raw = self.redis.get(self.key("current"))
        name = None if raw is None else raw.decode(errors="replace")
        return name if version_number(name) is not None else None

    def set_current_version(self, name: str) -> None:
        """Serve version `name` (a rollback); KeyError when it was never recorded."""
        if version_number(name) is None or self.version(name) is None:
            raise KeyError(name)
        self.redis.set(self.key("current"), name)

    # -- publication (what Label Studio orders by) -----------------------------------------------------
    def set_published(self, record: dict[str, Any], ranking: dict[int, dict[str, Any]]) -> None:
        """Record the prediction version now live in Label Studio and its per-task ranking."""
        pipe = self.redis.pipeline()
        pipe.set(self.key("published"), json.dumps(record))
        pipe.delete(self.key("ranking"))
        items = [(str(k), json.dumps(v)) for k, v in ranking.items()]
        for start in range(0, len(items), 5000):
            pipe.hset(self.key("ranking"), mapping=dict(items[start:start + 5000]))
        pipe.rpush(self.key("publications"), json.dumps(record))
        pipe.ltrim(self.key("publications"), -100, -1)
        pipe.execute()

    def published(self) -> dict[str, Any] | None:
        """The live publication record ({'model_version', 'version', 'strategy', ...}), or None."""
        raw = self.redis.get(self.key("published"))
        return None if raw is None else json.loads(raw)

    def publications(self) -> list[dict[str, Any]]:
        """Recent publications, oldest first."""
        return [json.loads(v) for v in self.redis.lrange(self.key("publications"), 0, -1)]

    def task_rank(self, task_id: int) -> dict[str, Any] | None:
        """The published rank/score/uncertainty of one task, or None."""
        raw = self.redis.hget(self.key("ranking"), str(task_id))
        return None if raw is None else json.loads(raw)

    def ranking_head(self, k: int) -> list[dict[str, Any]]:
        """The first `k` tasks of the published order."""
        rows = [dict(json.loads(v), task=int(t)) for t, v in self.redis.hgetall(self.key("ranking")).items()]
        return sorted(rows, key=lambda r: r["rank"])[:k]

    # -- status of the last rounds ---------------------------------------------------------------------
    def set_info(self, **values: Any) -> None:
        """Store status fields (JSON values) shown by `lsal status`."""
        if values:
            self.redis.hset(self.key("info"), mapping={k: json.dumps(v) for k, v in values.items()})

    def info(self) -> dict[str, Any]:
        """The status fields stored with set_info."""
        out = {}
        for k, v in self.redis.hgetall(self.key("info")).items():
            try:
                out[k.decode()] = json.loads(v)
            except ValueError:
                out[k.decode()] = v.decode()
        return out

    # -- label-noise review (what the worker's review job found; the annotations themselves are not touched) --
    def set_review(self, record: dict[str, Any]) -> None:
        """Store the newest label-noise review of the project ({'items': [...], 'flagged', ...})."""
        self.redis.set(self.key("review"), json.dumps(record))

    def review(self) -> dict[str, Any] | None:
        """The newest label-noise review, or None before the first."""
        raw = self.redis.get(self.key("review"))
        return None if raw is None else json.loads(raw)

    # -- audit ----------------------------------------------------------------------------------------
    def audit(self, record: dict[str, Any]) -> None:
        """Append an admin change ({'at', 'actor', 'action', 'detail'}) to the project's audit log."""
        pipe = self.redis.pipeline()
        pipe.rpush(self.key("audit"), json.dumps(record, default=str))
        pipe.ltrim(self.key("audit"), -AUDIT_KEEP, -1)
        pipe.execute()

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` audit records, oldest first."""
        return [json.loads(v) for v in self.redis.lrange(self.key("audit"), -limit, -1)]


def known_projects(redis: Redis) -> list[int]:
    """Projects this service knows: confirmed by Label Studio at /setup, or named by an authenticated call."""
    return sorted(int(p) for p in redis.smembers(PROJECTS_KEY) if p.isdigit())
