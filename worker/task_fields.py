"""Task fields: why each unlabeled task stands where it does in the order, written where people look.

With the project setting `task_fields` on, every publication writes `lsal_*` fields into each unlabeled
task's data (the rest of the data is kept as it was), so that the Data Manager shows and sorts them as
columns and a labeling config can show `$lsal_reason` next to the image; and it keeps one Data Manager tab,
"lsal priority", that lists the unlabeled tasks in our order with those columns. Label Studio 1.23 shows
neither a prediction's `meta.text` nor its score for choices on the labeling page, so this is the way the
model's reasons reach annotators. It changes the tasks' data (docs/label-studio.md#what-annotators-see).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from core.ls_client import LabelStudioError
from plugins.confident import ConfidentRule
from worker.context import JobContext

log = logging.getLogger("lsal.worker")
VIEW_TITLE = "lsal priority"
CONFIDENT_VIEW_TITLE = "lsal confident"
WRITERS = 4  # task updates in flight at once
CHECK_EVERY = 100  # task updates between two checks of the job's lock
# Data Manager columns our tab hides, so that the image and our columns come first (an admin can show them)
HIDDEN = ("inner_id", "completed_at", "cancelled_annotations", "total_predictions", "annotators",
          "annotations_results", "annotations_ids", "predictions_results", "file_upload", "storage_filename",
          "created_at", "updated_at", "updated_by", "avg_lead_time", "draft_exists")
NUMBERS = ("lsal_rank", "lsal_uncertainty", "lsal_confidence", "lsal_confident")
FIELDS = ("lsal_rank", "lsal_uncertainty", "lsal_confidence", "lsal_prediction", "lsal_strategy", "lsal_model",
          "lsal_confident", "lsal_reason")


def reason(rank: int, n: int, strategy: str, label: str, confidence: float, uncertainty_name: str,
           uncertainty: float, version: str, confident: ConfidentRule | None = None) -> str:
    """One line a person reads: the task's rank, who ranked it, what the model predicts and how sure it is;
    with `confident`, that the pre-label is a confident one and what its precision is."""
    if confident is not None and confident.threshold is not None:
        return (f"lsal: confident pre-label {label} (model {version}): accept it unless it is wrong. Calibrated "
                f"confidence at or above {confident.threshold:.4f}, where held-out precision is "
                f"{confident.precision:.3f} ({confident.correct}/{confident.above}; at least "
                f"{confident.lower_bound:.3f} at {confident.level:.0%} confidence); rank {rank} of {n}, after "
                f"every task the model is unsure of")
    return (f"lsal: rank {rank} of {n} by {strategy} (model {version}); predicted {label}, confidence "
            f"{confidence:.3f}, {uncertainty_name} {uncertainty:.3f}")


def fields_of(row: dict[str, Any], n: int, strategy: str, version: str, uncertainty_name: str,
              confident: ConfidentRule | None = None) -> dict[str, Any]:
    """The `lsal_*` fields of one published task (`row`: its entry in the published table; `confident`: the
    rule that marks it a confident pre-label, when it does)."""
    label = str(row["label"])
    sure = confident if row.get("confident") else None
    return {"lsal_rank": row["rank"] + 1, "lsal_uncertainty": round(row["entropy"], 4),
            "lsal_confidence": round(row["confidence"], 4), "lsal_prediction": label, "lsal_strategy": strategy,
            "lsal_model": version, "lsal_confident": int(sure is not None),
            "lsal_reason": reason(row["rank"] + 1, n, strategy, label, row["confidence"], uncertainty_name,
                                  row["entropy"], version, sure)}


def merged(data: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`data` with its old order fields (FIELDS) replaced by `fields`; every other field as it was (the
    review's `lsal_issue_*` fields included)."""
    return {**{k: v for k, v in data.items() if k not in FIELDS}, **fields}


def view_data() -> dict[str, Any]:
    """The Data Manager tab: the unlabeled tasks in our order (lowest lsal_rank first)."""
    return {"title": VIEW_TITLE, "type": "list", "ordering": ["tasks:data.lsal_rank"],
            "filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}]},
            "columnsDisplayType": {f"tasks:data.{f}": "Number" for f in NUMBERS},  # else ordered as text
            "hiddenColumns": {"explore": [f"tasks:{c}" for c in HIDDEN], "labeling": []}}


def confident_view_data() -> dict[str, Any]:
    """The Data Manager tab of the unlabeled tasks with a confident pre-label, most confident first (select
    them all, then Label Studio's action "Create Annotations From Predictions" accepts them): our priority
    tab's columns, its filter and one more."""
    base = view_data()
    confident = {"filter": "filter:tasks:data.lsal_confident", "operator": "equal", "type": "Number", "value": 1}
    return {**base, "title": CONFIDENT_VIEW_TITLE, "ordering": ["-tasks:data.lsal_confidence"],
            "filters": {**base["filters"], "items": [*base["filters"]["items"], confident]}}


def write_task_fields(ctx: JobContext, table: dict[int, dict[str, Any]], strategy: str, version: str,
                      uncertainty_name: str, confident: ConfidentRule | None = None) -> dict[str, Any]:
    """Write the `lsal_*` fields of every task in `table` into Label Studio and keep our Data Manager tab;
    what was written, and the error that stopped it if one did (the order is live either way). Stops
    (LockLostError) when the job lost its lock: a newer publication writes its own fields."""
    n = len(table)
    changes: list[tuple[int, dict[str, Any]]] = []
    unchanged = 0
    for task in ctx.ls.tasks(ctx.project, ids=list(table)):
        task_id = int(task["id"])
        if task_id not in table or not isinstance(task.get("data"), dict):
            continue
        new = merged(task["data"], fields_of(table[task_id], n, strategy, version, uncertainty_name, confident))
        if new == task["data"]:
            unchanged += 1
        else:
            changes.append((task_id, new))
    written, error = write_task_data(ctx, changes, "task fields")
    out = {"written": written, "unchanged": unchanged, "of": n, "view": ensure_view(ctx, view_data()),
           "error": error}
    if confident is not None:
        out["confident_view"] = ensure_view(ctx, confident_view_data())
    return out


def write_task_data(ctx: JobContext, changes: list[tuple[int, dict[str, Any]]], what: str) -> tuple[int, str | None]:
    """PATCH each (task, data) of `changes` into Label Studio, a few in flight at once, checking the job's lock
    every CHECK_EVERY tasks; (how many were written, the error that stopped it or None)."""
    written = 0
    # Label Studio has no bulk update of task data: one PATCH per task
    with ThreadPoolExecutor(WRITERS) as pool:
        for start in range(0, len(changes), CHECK_EVERY):
            ctx.check_lock()
            block = changes[start:start + CHECK_EVERY]
            try:
                list(pool.map(lambda change: ctx.ls.update_task_data(*change), block))
            except LabelStudioError as exc:
                log.warning("project %s: %s written for about %d of %d tasks, then: %s", ctx.project, what,
                            written, len(changes), exc)
                return written, str(exc)
            written += len(block)
    return written, None


def ensure_view(ctx: JobContext, data: dict[str, Any]) -> int | None:
    """The id of the project's Data Manager tab titled `data["title"]`, created from `data` when the project has
    none (an admin's edits to it are kept)."""
    try:
        for view in ctx.ls.views(ctx.project):
            if (view.get("data") or {}).get("title") == data["title"]:
                return int(view["id"])
        return int(ctx.ls.save_view(ctx.project, data)["id"])
    except LabelStudioError as exc:  # the order and the fields are live; the tab is a convenience
        log.warning("project %s: could not create the %r Data Manager tab: %s", ctx.project, data["title"], exc)
        return None
