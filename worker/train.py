"""retrain: read the labeled tasks from Label Studio, train the project's model, write a new version.

Everything kind-specific (targets, held-out metrics, model options) comes from the project's task kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from core.curves import learning_curve_png
from core.model_cache import artifact_path, project_dir
from core.project_settings import ProjectSettings
from core.store import version_number
from plugins.confident import confident_rule, needed_items
from plugins.fileio import atomic_write, remove_stale_temporaries
from plugins.holdout import assign_holdout, split_indices
from plugins.kinds import TaskKind
from plugins.models import build_model
from plugins.models.base import ModelPlugin, Progress
from plugins.models.artifact import ArtifactError, save_artifact
from plugins.promotion import DEFAULT_LEVEL, Verdict, judge
from worker.context import JobContext


def with_synthetic(settings: ProjectSettings, kind: TaskKind, x: np.ndarray, y: np.ndarray,
                   salt: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(x, y) plus the synthetic items the project's augment rules make from them, and the count per rule."""
    if not settings.augment:
        return x, y, []
    made = kind.synthesize(x, y, settings.augment, np.random.default_rng([settings.seed, salt]))
    return np.concatenate([x, made.images]), np.concatenate([y, made.y]), made.counts


def fit_and_measure(model: ModelPlugin, kind: TaskKind, settings: ProjectSettings, x: np.ndarray, y: np.ndarray,
                    train_idx: np.ndarray, held_idx: np.ndarray, on_stage: Callable[[str], None] | None = None,
                    progress: Progress | None = None, refit: bool = True) -> Fitted:
    """Fit on the training side (plus synthetic items), measure on the real held-out items, then, with `refit`
    (the promotion gate off), fit on every real item (plus synthetic ones)."""
    stage = on_stage or (lambda name: None)
    metrics: dict[str, Any] = {}
    held_outputs = None
    if len(held_idx):  # measured on real held-out items only: synthetic ones join the training side
        stage("train_holdout")
        x_fit, y_fit, synthetic_fit = with_synthetic(settings, kind, x[train_idx], y[train_idx], salt=1)
        fit_metrics = model.fit(x_fit, y_fit, progress=progress) or {}
        held_outputs = model.predict_proba(x[held_idx])
        metrics = {**kind.metrics(y[held_idx], held_outputs, settings.label_threshold),
                   "holdout_size": int(len(held_idx))}
        if not refit:  # the measured model is the served one: the gate compares it on items it never saw
            metrics.update({k: v for k, v in fit_metrics.items() if isinstance(v, (int, float))})
            return Fitted(metrics, list(synthetic_fit), held_outputs, int(len(train_idx)))
    stage("train_all")
    x_all, y_all, synthetic = with_synthetic(settings, kind, x, y, salt=2)
    fit_metrics = model.fit(x_all, y_all, progress=progress) or {}
    metrics.update({k: v for k, v in fit_metrics.items() if isinstance(v, (int, float))})
    return Fitted(metrics, synthetic, held_outputs, int(len(y)))


class Fitted(NamedTuple):
    """What a fit reports: held-out metrics (and the fit's own), synthetic items per augment rule of the final
    fit, the held-out model's outputs on the held-out items (None without a held-out part), and the real
    items the served model trained on."""

    metrics: dict[str, Any]
    synthetic: list[int]
    held_outputs: Any
    trained: int


def confident_block(settings: ProjectSettings, kind: TaskKind, held_outputs: Any,
                    y_held: np.ndarray) -> dict[str, Any] | None:
    """The version's confident pre-label rule (plugins.confident) as the version record keeps it; None when
    the project has no confident_target."""
    if settings.confident_target is None:
        return None
    target, level = settings.confident_target, settings.confident_level
    if not kind.confident_labels:
        return {"target": target, "level": level, "threshold": None,
                "reason": f"confident pre-labels cover single-label classification, not {kind.title}"}
    needed = needed_items(target, level)
    if held_outputs is None or len(y_held) == 0:
        return {"target": target, "level": level, "threshold": None, "needed": needed, "held_out": 0,
                "reason": "this version has no held-out labels (holdout_fraction is 0, or every class has fewer "
                          "than 3 labels)"}
    rule = confident_rule(np.asarray(held_outputs), y_held, target, level).as_dict()
    if rule["threshold"] is None and rule["held_out"] < needed and settings.holdout_fraction > 0:
        rule["labels_needed"] = int(np.ceil(needed / settings.holdout_fraction))
        rule["reason"] += (f"; at holdout_fraction {settings.holdout_fraction} that takes at least "
                           f"{rule['labels_needed']} labels")
    return rule


def train_version(ctx: JobContext) -> dict[str, Any]:
    """Train on every labeled task Label Studio holds now; record the new version, and serve it when the
    promotion gate passes it."""
    settings = ctx.project_settings
    with ctx.phase("fetch_tasks"):
        project, kind = ctx.project_kind()
        sets = ctx.task_sets(kind)
    if len(sets.labeled) < settings.min_labels:
        return {"status": "waiting_for_labels", "labeled": len(sets.labeled), "min_labels": settings.min_labels}
    with ctx.phase("load_inputs"):
        ids, x, skipped = ctx.inputs(kind, [(t, v) for t, v, _ in sets.labeled])
    answer_of = {t: answer for t, _, answer in sets.labeled}
    answers = [answer_of[t] for t in ids]
    y = kind.encode(answers)
    reason = kind.not_ready(y)
    if reason is not None:
        return {"status": "waiting_for_labels", "labeled": len(ids), "reason": reason, "skipped": len(skipped)}
    if kind.models and settings.model.name not in kind.models:
        raise ValueError(f"model {settings.model.name!r} does not fit a {kind.title} project; set the project's "
                         f"model to one of: {', '.join(kind.models)}")
    sides = assign_holdout(ids, kind.strata(y), settings.holdout_fraction, settings.seed,
                           ctx.store.holdout_sides(settings.holdout_fraction))
    train_idx, held_idx = split_indices(ids, sides)
    model_params = {**settings.model_params(), **kind.model_params()}
    model = build_model(settings.model.name, len(kind.labels), **model_params)
    warm_from = _warm_start(ctx, model, list(kind.labels))

    def on_progress(values: dict[str, Any]) -> None:
        # the model's own 'phase' (e.g. which committee member) becomes 'step' beside the job's phase
        ctx.progress(**{("step" if k == "phase" else k): v for k, v in values.items()})

    refit = not (settings.promotion_gate and len(held_idx))  # gated: the served model is the measured one
    with ctx.phase("train"):
        fitted = fit_and_measure(model, kind, settings, x, y, train_idx, held_idx,
                                 on_stage=lambda name: ctx.progress(phase=name), progress=on_progress, refit=refit)
    metrics, synthetic = fitted.metrics, fitted.synthetic
    confident = confident_block(settings, kind, fitted.held_outputs, y[held_idx])
    with ctx.phase("promotion_gate"):
        verdict = promotion_verdict(ctx, kind, settings, x[held_idx], y[held_idx], fitted.held_outputs,
                                    y[train_idx])
    store = ctx.store
    folder = project_dir(ctx.settings.model_dir, ctx.project)
    newest_on_disk = max((number for p in folder.glob("v*.pt") if (number := version_number(p.stem)) is not None),
                         default=0)
    ctx.check_lock()  # another job may hold the project now: its version, not ours, comes next
    version = store.next_version(at_least=newest_on_disk + 1)
    path = artifact_path(ctx.settings.model_dir, ctx.project, version)
    counts = kind.label_counts(y)
    augmentation = {"rules": [r.model_dump(mode="json") for r in settings.augment], "synthetic": synthetic,
                    "real": fitted.trained} if settings.augment else None
    extra = {"project": ctx.project, "tasks": [int(t) for t in ids], "annotations": sorted(sets.annotation_ids),
             "settings": settings.model_dump(mode="json"), "warm_start": warm_from, "kind": kind.describe(),
             "augmentation": augmentation}
    with ctx.phase("save"):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)  # what a worker killed mid-write left behind
        save_artifact(path, model, label_map=list(kind.labels), metrics=metrics, extra=extra)
    record = {"version": version, "path": str(path), "created_at": time.time(), "metrics": metrics,
              "labeled": len(ids), "class_counts": counts, "skipped": len(skipped) + len(sets.skipped),
              "model": settings.model.name, "kind": kind.name, "primary_metric": kind.primary_metric,
              "warm_start": warm_from, "augmentation": augmentation, **kind.answers_report(answers),
              "max_annotation_id": max(sets.annotation_ids, default=0), "timings": dict(ctx.timings),
              "confident": confident, "promotion": verdict.as_dict(), "promoted": verdict.promote,
              "holdout_set": {"fraction": settings.holdout_fraction, "stable": True, "held_out": int(len(held_idx)),
                          "refit_on_all": refit}}
    ctx.check_lock()
    store.set_holdout_sides(settings.holdout_fraction, sides)
    store.add_version(record, serve=verdict.promote)  # held back: recorded for inspection, the serving one stays
    with ctx.phase("curve"):  # the project's learning curve beside its artifacts
        atomic_write(folder / "learning_curve.png",
                     lambda stream: stream.write(learning_curve_png(ctx.project, store.versions())))
    if isinstance(project.get("num_tasks_with_annotations"), int):
        store.set_trained_count(project["num_tasks_with_annotations"])
    store.set_info(skipped=[s.__dict__ for s in (skipped + sets.skipped)[:50]], labeled=len(ids),
                   unlabeled=len(sets.unlabeled))
    return {"status": "trained" if verdict.promote else "held_back", **record}


def promotion_verdict(ctx: JobContext, kind: TaskKind, settings: ProjectSettings, x_held: np.ndarray,
                      y_held: np.ndarray, held_outputs: Any, y_train: np.ndarray) -> Verdict:
    """The promotion gate's verdict on the new version's held-out outputs, against the serving version on the
    same items (or, for the first version, the kind's no-model baseline)."""
    if not settings.promotion_gate:
        return Verdict(True, "promoted: the project's promotion gate is off")
    if held_outputs is None:
        return Verdict(True, "promoted: no held-out items to compare on (holdout_fraction 0 or too few labels)")
    metric = kind.gate_metric(settings.label_threshold)
    options = {"level": DEFAULT_LEVEL, "margin": settings.promotion_margin, "seed": settings.seed,
               "resamples": kind.gate_resamples}
    current = ctx.store.current_version()
    if current is None:
        return judge(kind.primary_metric, metric, y_held, held_outputs, kind.no_model_outputs(y_train, len(y_held)),
                     "no-model baseline", **options)
    why_not = _not_comparable(ctx.store.version(current), settings)
    serving = None
    if why_not is None:
        try:
            artifact = ctx.models.get(ctx.project, current)
            if artifact.label_map != list(kind.labels):
                why_not = f"{current} was trained on other labels ({artifact.label_map})"
            else:
                serving = artifact.model.predict_proba(x_held)
        except (ArtifactError, ValueError, RuntimeError) as exc:
            why_not = f"{current} cannot score the held-out items ({type(exc).__name__}: {str(exc)[:200]})"
    if why_not is not None:
        return Verdict(True, f"promoted: not compared, {why_not}", kind.primary_metric, current)
    return judge(kind.primary_metric, metric, y_held, held_outputs, serving, current, **options)


def _not_comparable(record: dict[str, Any] | None, settings: ProjectSettings) -> str | None:
    """Why the serving version's figures on today's held-out items would not be fair, or None."""
    holdout = (record or {}).get("holdout_set") or {}
    if not holdout.get("stable") or holdout.get("refit_on_all", True):
        return f"{(record or {}).get('version')} trained on held-out items (trained before the stable held-out set, " \
               "or with the gate off)"
    if holdout.get("fraction") != settings.holdout_fraction:
        return f"the held-out fraction changed since {(record or {}).get('version')} (its held-out set is another)"
    return None


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
