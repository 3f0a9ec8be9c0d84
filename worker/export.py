"""Export of confident pre-labels: with the project's `confident_export` on, a publication saves each confident
task's pre-label as an annotation, so that Label Studio counts and exports it as a label without a human.

Each saved annotation is marked (core.labeled_set.AUTO_KEY in every region: the label and the model version):
no retrain trains on it and no review judges it, its webhook is not counted as a change, and a person who
corrects it in Label Studio makes it a human label again. Only tasks without any annotation are saved.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from core.labeled_set import auto_result
from core.ls_client import LabelStudioError
from worker.context import JobContext
from worker.score import Scored
from worker.task_fields import CHECK_EVERY

log = logging.getLogger("lsal.worker")


def export_confident(ctx: JobContext, scored: Scored, confident: np.ndarray) -> dict[str, Any]:
    """Save the confident tasks' pre-labels as marked annotations; how many, and the error that stopped it."""
    rows = np.flatnonzero(np.asarray(confident, dtype=bool))
    saved, error = 0, None
    for n, i in enumerate(rows):
        if n % CHECK_EVERY == 0:
            ctx.check_lock()  # a newer publication decides what is confident now
        result = scored.kind.regions(scored.outputs[i], scored.threshold)
        task = int(scored.task_ids[i])
        ctx.store.add_trained_count(1)  # before Label Studio's webhook counts the task as newly annotated
        try:
            ctx.ls.create_annotation(task, auto_result(result, scored.kind.answer(result), scored.version))
        except LabelStudioError as exc:
            ctx.store.add_trained_count(-1)
            error = str(exc)[:500]
            log.warning("project %s: %d of %d confident pre-labels saved, then: %s", ctx.project, saved,
                        len(rows), exc)
            break
        saved += 1
    return {"saved": saved, "of": int(len(rows)), "error": error}
