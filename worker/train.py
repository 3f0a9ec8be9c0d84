"""retrain: read the labeled tasks from Label Studio, train the project's model, write a new version."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from core.curves import learning_curve_png
from core.label_config import parse_target
from core.labeled_set import split_tasks
from core.model_cache import artifact_path, project_dir
from core.store import version_number
from plugins.fileio import atomic_write, remove_stale_temporaries
from plugins.models import build_model
from plugins.models.artifact import ArtifactError, save_artifact
from worker.context import JobContext


def holdout_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices: `fraction` of each class held out, classes with < 3 items kept whole."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_held = int(round(len(idx) * fraction)) if len(idx) >= 3 else 0
        held.extend(idx[:n_held])
        train.extend(idx[n_held:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def train_version(ctx: JobContext) -> dict[str, Any]:
    """Train on every labeled task Label Studio holds now; record and serve the new version."""
    settings = ctx.project_settings
    with ctx.phase("fetch_tasks"):
        project = ctx.ls.project(ctx.project)
        target = parse_target(project.get("label_config", ""))
        sets = split_tasks(ctx.ls.tasks(ctx.project), target)
    if len(sets.labeled) < settings.min_labels:
        return {"status": "waiting_for_labels", "labeled": len(sets.labeled), "min_labels": settings.min_labels}
    fetcher = ctx.fetcher()
    with ctx.phase("load_images"):
        ids, x, skipped = fetcher.load_many([(t, u) for t, u, _ in sets.labeled], settings.image_size,
                                            settings.channels)
    fetcher.close()
    label_of = {t: label for t, _, label in sets.labeled}
    index = {label: i for i, label in enumerate(target.labels)}
    y = np.asarray([index[label_of[t]] for t in ids], dtype=np.int64)
    if len(np.unique(y)) < 2:
        return {"status": "waiting_for_labels", "labeled": len(ids),
                "reason": "the labeled tasks cover fewer than 2 classes", "skipped": len(skipped)}
    model_params = settings.model_params()
    train_idx, held_idx = holdout_split(y, settings.holdout_fraction, settings.seed)
    model = build_model(settings.model.name, len(target.labels), **model_params)
    warm_from = _warm_start(ctx, model, list(target.labels))

    def on_progress(values: dict[str, Any]) -> None:
        # the model's own 'phase' (e.g. which committee member) becomes 'step' beside the job's phase
        ctx.progress(**{("step" if k == "phase" else k): v for k, v in values.items()})

    metrics: dict[str, Any] = {}
    with ctx.phase("train"):
        if len(held_idx):
            ctx.progress(phase="train_holdout")
            model.fit(x[train_idx], y[train_idx], progress=on_progress)
            pred = model.predict_proba(x[held_idx]).argmax(axis=1)
            metrics = {"holdout_accuracy": float(accuracy_score(y[held_idx], pred)),
                       "holdout_macro_f1": float(f1_score(y[held_idx], pred, average="macro", zero_division=0)),
                       "holdout_size": int(len(held_idx))}
        ctx.progress(phase="train_all")
        fit_metrics = model.fit(x, y, progress=on_progress) or {}
    metrics.update({k: v for k, v in fit_metrics.items() if isinstance(v, (int, float))})
    store = ctx.store
    newest_on_disk = max((number for p in project_dir(ctx.settings.model_dir, ctx.project).glob("v*.pt")
                          if (number := version_number(p.stem)) is not None), default=0)
    version = store.next_version(at_least=newest_on_disk + 1)
    path = artifact_path(ctx.settings.model_dir, ctx.project, version)
    counts = Counter(label_of[t] for t in ids)
    extra = {"project": ctx.project, "tasks": [int(t) for t in ids], "annotations": sorted(sets.annotation_ids),
             "settings": settings.model_dump(mode="json"), "warm_start": warm_from}
    with ctx.phase("save"):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)  # what a worker killed mid-write left behind
        save_artifact(path, model, label_map=list(target.labels), metrics=metrics, extra=extra)
    record = {"version": version, "path": str(path), "created_at": time.time(), "metrics": metrics,
              "labeled": len(ids), "class_counts": dict(counts), "skipped": len(skipped) + len(sets.skipped),
              "model": settings.model.name, "warm_start": warm_from, "max_annotation_id":
                  max(sets.annotation_ids, default=0), "timings": dict(ctx.timings)}
    store.add_version(record)
    with ctx.phase("curve"):  # the project's learning curve beside its artifacts
        atomic_write(path.parent / "learning_curve.png",
                     lambda stream: stream.write(learning_curve_png(ctx.project, store.versions())))
    if isinstance(project.get("num_tasks_with_annotations"), int):
        store.set_trained_count(project["num_tasks_with_annotations"])
    store.set_info(skipped=[s.__dict__ for s in (skipped + sets.skipped)[:50]], labeled=len(ids),
                   unlabeled=len(sets.unlabeled))
    return {"status": "trained", **record}


def _warm_start(ctx: JobContext, model: Any, labels: list[str]) -> str | None:
    """Load the serving version's weights into `model` when it has the same config and labels."""
    current = ctx.store.current_version()
    if current is None:
        return None
    try:
        previous = ctx.models.get(ctx.project, current)
    except ArtifactError:
        return None
    if previous.label_map != labels or previous.model.config() != model.config():
        return None
    model.load_state_dict(previous.model.state_dict())
    return current
