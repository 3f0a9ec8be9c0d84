"""Label Studio tasks -> the labeled and unlabeled sets a model trains and scores on, for a project's task kind."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.image_fetch import Skipped
from plugins.kinds import TaskKind, UnusableAnswer


AUTO_KEY = "lsal_auto"  # the key our confident pre-labels saved as annotations carry in each result region


def auto_result(result: list[dict[str, Any]], label: Any, version: str) -> list[dict[str, Any]]:
    """`result` (a prediction's regions) marked as a confident pre-label of `version` saved without a human."""
    mark = {"label": label, "version": version}
    return [{**region, AUTO_KEY: mark} for region in result]


def auto_label(annotation: dict[str, Any], kind: TaskKind | None = None) -> bool:
    """Whether `annotation` is one of our saved confident pre-labels, unchanged: marked, and (with `kind`) still
    giving the label we saved. A person who corrected it made it a human label."""
    result = annotation.get("result") if isinstance(annotation, dict) else None
    marks = [r.get(AUTO_KEY) for r in result or [] if isinstance(r, dict)]
    if not marks or not all(isinstance(m, dict) for m in marks):
        return False
    if kind is None:
        return True
    try:
        return kind.answer(result) == marks[0].get("label")
    except UnusableAnswer:
        return False


@dataclass
class TaskSets:
    """Task ids with their input values: labeled ones with their answer (the kind's training target),
    unlabeled ones, and tasks left out."""

    labeled: list[tuple[int, Any, Any]] = field(default_factory=list)  # (task, input value, answer)
    unlabeled: list[tuple[int, Any]] = field(default_factory=list)  # (task, input value)
    skipped: list[Skipped] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)  # the annotations the labels come from
    auto_labeled: list[int] = field(default_factory=list)  # tasks labeled by our confident pre-labels only


def _final_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's most recent annotation that was not cancelled (skipped), or None."""
    live = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not live:
        return None
    return max(live, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def split_tasks(tasks: Iterable[dict[str, Any]], kind: TaskKind) -> TaskSets:
    """Sort tasks into labeled (the last live annotation's answer) and unlabeled; skip what cannot be used."""
    sets = TaskSets()
    for task in tasks:
        task_id = task.get("id")
        if not isinstance(task_id, int):
            continue
        data = task.get("data")
        value = data.get(kind.value_key) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            sets.skipped.append(Skipped(task_id, f"no_{kind.input_type}",
                                        f"task data has no {kind.value_key!r} {kind.input_type}"))
            continue
        if any(isinstance(a, dict) and a.get("was_cancelled") for a in task.get("annotations") or []) and \
                _final_annotation(task) is None:
            continue  # skipped by every annotator who saw it: neither labeled nor worth serving again
        annotation = _final_annotation(task)
        if annotation is None:
            sets.unlabeled.append((task_id, value))
            continue
        if auto_label(annotation, kind):  # never trained on, and done: no longer in the pool either
            sets.auto_labeled.append(task_id)
            continue
        try:
            answer = kind.answer(annotation.get("result") or [])
        except UnusableAnswer as exc:
            sets.skipped.append(Skipped(task_id, "unusable_annotation", f"annotation {annotation.get('id')}: {exc}"))
            continue
        if answer is None:
            sets.skipped.append(Skipped(task_id, "no_label", f"annotation {annotation.get('id')} chose no known "
                                                             f"{kind.from_name!r} label"))
            continue
        sets.labeled.append((task_id, value, answer))
        if isinstance(annotation.get("id"), int):
            sets.annotation_ids.append(annotation["id"])
    return sets
