"""Label Studio tasks -> the labeled and unlabeled sets a model trains and scores on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.image_fetch import Skipped
from core.label_config import ClassificationTarget


@dataclass
class TaskSets:
    """Task ids with image URLs: labeled ones with their label, unlabeled ones, and tasks left out."""

    labeled: list[tuple[int, str, str]] = field(default_factory=list)  # (task, url, label)
    unlabeled: list[tuple[int, str]] = field(default_factory=list)  # (task, url)
    skipped: list[Skipped] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)  # the annotations the labels come from


def _final_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The task's most recent annotation that was not cancelled (skipped), or None."""
    live = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not live:
        return None
    return max(live, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def split_tasks(tasks: Iterable[dict[str, Any]], target: ClassificationTarget) -> TaskSets:
    """Sort tasks into labeled (last live annotation's choice) and unlabeled; skip what cannot be used."""
    sets = TaskSets()
    labels = set(target.labels)
    for task in tasks:
        task_id = task.get("id")
        if not isinstance(task_id, int):
            continue
        url = (task.get("data") or {}).get(target.value_key)
        if not isinstance(url, str) or not url:
            sets.skipped.append(Skipped(task_id, "no_image", f"task data has no {target.value_key!r} URL"))
            continue
        if any(isinstance(a, dict) and a.get("was_cancelled") for a in task.get("annotations") or []) and \
                _final_annotation(task) is None:
            continue  # skipped by every annotator who saw it: neither labeled nor worth serving again
        annotation = _final_annotation(task)
        if annotation is None:
            sets.unlabeled.append((task_id, url))
            continue
        label = target.label_of(annotation.get("result") or [])
        if label is None or label not in labels:
            sets.skipped.append(Skipped(task_id, "no_label", f"annotation {annotation.get('id')} chose no known "
                                                             f"{target.from_name!r} label"))
            continue
        sets.labeled.append((task_id, url, label))
        if isinstance(annotation.get("id"), int):
            sets.annotation_ids.append(annotation["id"])
    return sets
