"""review: after a retrain, judge every labeled task's label out of fold and keep the doubtful ones.

A job of its own (enqueued by the retrain after its rescore), under the project lock like every job: it
reads the labeled tasks from Label Studio, fits `review_folds` fresh copies of the project's model (each on
the other folds only: plugins.label_quality), lets cleanlab flag the labels the models doubt, and stores the
result in the project's store (`lsal review`, GET /admin/projects/{id}/review). It changes no annotation.
With the project's `task_fields` on, it also writes `lsal_issue_*` fields into the flagged tasks' data (and
clears them from tasks no longer flagged) and keeps a Data Manager tab "lsal review" of the flagged tasks,
most doubtful first. A failed review leaves the serving model and the published order as they were.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from plugins.label_quality import NotReviewable, review_labels
from plugins.models import build_model
from worker.context import JobContext
from worker.task_fields import ensure_view, write_task_data

log = logging.getLogger("lsal.worker")
REVIEWABLE = ("image_classification", "image_multilabel", "text_classification", "text_multilabel")
ISSUE_PREFIX = "lsal_issue"
VIEW_TITLE = "lsal review"
ISSUE_FIELDS = ("lsal_issue_rank", "lsal_issue_score", "lsal_issue_given", "lsal_issue_model_label",
                "lsal_issue_confidence", "lsal_issue_reason")


def issue_reason(item: dict[str, Any], flagged: int, folds: int, version: str | None) -> str:
    """The line a reviewer reads on a flagged task: the given label, the model's, and how sure it is."""
    return (f"lsal review: label {item['given']!r} doubted (issue {item['rank']} of {flagged}, quality "
            f"{item['quality']:.3f}); a model that never saw this label ({folds}-fold, {version or 'no version'}) "
            f"says {item['predicted']!r} with confidence {item['confidence']:.3f}")


def issue_fields(item: dict[str, Any], flagged: int, folds: int, version: str | None) -> dict[str, Any]:
    """The `lsal_issue_*` fields of one flagged task."""
    return {"lsal_issue_rank": item["rank"], "lsal_issue_score": round(item["issue_score"], 4),
            "lsal_issue_given": item["given"], "lsal_issue_model_label": item["predicted"],
            "lsal_issue_confidence": round(item["confidence"], 4),
            "lsal_issue_reason": issue_reason(item, flagged, folds, version)}


def with_issue(data: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`data` with its old `lsal_issue*` fields replaced by `fields` (none: removed); the rest as it was."""
    return {**{k: v for k, v in data.items() if not k.startswith(ISSUE_PREFIX)}, **fields}


def view_data() -> dict[str, Any]:
    """The Data Manager tab: the flagged tasks (those with an lsal_issue_rank), most doubtful first."""
    return {"title": VIEW_TITLE, "type": "list", "ordering": ["tasks:data.lsal_issue_rank"],
            "filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:data.lsal_issue_rank", "operator": "greater", "type": "Number",
                 "value": 0}]},
            "columnsDisplayType": {f"tasks:data.{f}": "Number" for f in
                                   ("lsal_issue_rank", "lsal_issue_score", "lsal_issue_confidence")},
            "hiddenColumns": {"explore": [], "labeling": []}}


def review_project(ctx: JobContext) -> dict[str, Any]:
    """The review job's body: judge the labels, store the result, write the flags where reviewers look."""
    settings = ctx.project_settings
    if not settings.review:
        return {"status": "off", "reason": "the project's setting review is false"}
    with ctx.phase("fetch_tasks"):
        _, kind = ctx.project_kind()
        if kind.name not in REVIEWABLE:
            return {"status": "unsupported", "reason": f"label review covers {', '.join(REVIEWABLE)}, "
                                                       f"not {kind.name}"}
        sets = ctx.task_sets(kind)
    with ctx.phase("load_inputs"):
        ids, x, skipped = ctx.inputs(kind, [(t, v) for t, v, _ in sets.labeled])
    answer_of = {t: answer for t, _, answer in sets.labeled}
    y = kind.encode([answer_of[t] for t in ids])
    model_params = {**settings.model_params(), **kind.model_params()}
    multilabel = bool(model_params.get("multilabel", False))
    version = ctx.store.current_version()

    def on_fold(i: int, folds: int) -> None:
        ctx.progress(phase="review", fold=i + 1, folds=folds)  # a job that lost its lock stops here

    started = time.perf_counter()
    try:
        review = review_labels(lambda: build_model(settings.model.name, len(kind.labels), **model_params),
                               x, y, kind.labels, k=settings.review_folds, seed=settings.seed,
                               multilabel=multilabel, threshold=settings.label_threshold, on_fold=on_fold)
    except NotReviewable as exc:
        return {"status": "not_reviewable", "reason": str(exc), "labeled": len(ids)}
    ctx.timings["review"] = round(time.perf_counter() - started, 3)
    items = [{"task": int(ids[j.index]), "rank": j.rank, "given": j.given, "predicted": j.predicted,
              "confidence": round(j.confidence, 6), "given_probability": round(j.given_probability, 6),
              "quality": round(j.quality, 6), "issue_score": round(j.issue_score, 6), "flagged": j.flagged}
             for j in review.judgements]
    record = {"version": version, "created_at": time.time(), "kind": kind.name, "model": settings.model.name,
              "labeled": len(ids), "reviewed": review.reviewed, "flagged": review.flagged, "folds": review.folds,
              "method": review.method, "multilabel": multilabel,
              "not_reviewed": [{"task": int(ids[n["index"]]), "reason": n["reason"]} for n in review.not_reviewed],
              "skipped": len(skipped) + len(sets.skipped), "items": items}
    ctx.check_lock()  # another job may hold the project now: it writes the next review, not us
    ctx.store.set_review(record)
    summary = {k: record[k] for k in ("version", "labeled", "reviewed", "flagged", "folds")}
    if settings.task_fields:
        with ctx.phase("task_fields"):
            summary["task_fields"] = write_issue_fields(ctx, record)
    return {"status": "reviewed", **summary}


def write_issue_fields(ctx: JobContext, record: dict[str, Any]) -> dict[str, Any]:
    """Write `lsal_issue_*` into the flagged tasks' data, clear them from the other reviewed tasks, keep our
    tab; what was written, and the error that stopped it if one did (the stored review stands either way)."""
    flagged = {i["task"]: i for i in record["items"] if i["flagged"]}
    reviewed = [i["task"] for i in record["items"]]
    changes: list[tuple[int, dict[str, Any]]] = []
    for task in ctx.ls.tasks(ctx.project, ids=reviewed):
        data = task.get("data")
        if not isinstance(data, dict):
            continue
        task_id = int(task["id"])
        fields = issue_fields(flagged[task_id], record["flagged"], record["folds"], record["version"]) \
            if task_id in flagged else {}
        new = with_issue(data, fields)
        if new != data:
            changes.append((task_id, new))
    written, error = write_task_data(ctx, changes, "review fields")
    return {"written": written, "flagged": len(flagged), "view": ensure_view(ctx, view_data()), "error": error}
