"""Loaded model versions, one per project, reloaded only when the project's serving version changes."""

from __future__ import annotations

import threading
from pathlib import Path

from core.store import version_number
from plugins.models.artifact import Artifact, ArtifactError, load_artifact


def project_dir(model_dir: Path, project: int) -> Path:
    """The folder of `project`'s artifacts."""
    if isinstance(project, bool) or not isinstance(project, int) or project < 1:
        raise ValueError(f"invalid project id {project!r}")
    return Path(model_dir) / f"project-{project}"


def artifact_path(model_dir: Path, project: int, version: str) -> Path:
    """Where version `version` of `project` is stored; ValueError for a name that is not v<number> (a name
    read from Redis never reaches the filesystem unchecked)."""
    if version_number(version) is None:
        raise ValueError(f"invalid model version name {str(version)[:40]!r}: names are v<number>")
    return project_dir(model_dir, project) / f"{version}.pt"


class ModelCache:
    """Keeps each project's current artifact in memory; thread-safe."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self._loaded: dict[int, tuple[str, Artifact]] = {}
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}
        self.loads = 0  # how many artifacts were read from disk (for tests and /metrics)

    def get(self, project: int, version: str) -> Artifact:
        """The artifact of `version`, from memory when it is the one already loaded for `project`.

        Concurrent first requests for a project wait for one load (a lock per project) instead of each
        reading the file; other projects are served meanwhile.
        """
        with self._lock:
            held = self._loaded.get(project)
            if held is not None and held[0] == version:
                return held[1]
            loading = self._loading.setdefault(project, threading.Lock())
        with loading:
            with self._lock:
                held = self._loaded.get(project)
                if held is not None and held[0] == version:
                    return held[1]
            try:
                path = artifact_path(self.model_dir, project, version)
            except ValueError as exc:
                raise ArtifactError(str(exc)) from None
            artifact = load_artifact(path)
            with self._lock:
                self._loaded[project] = (version, artifact)
                self.loads += 1
        return artifact

    def loaded(self) -> dict[int, str]:
        """{project: version} held in memory."""
        with self._lock:
            return {p: v for p, (v, _) in self._loaded.items()}
