"""Confident pre-labels in the worker: the order serves them last, their fields and marks, and saved ones are
neither trained on nor served again unless a person corrected them."""

from __future__ import annotations

import numpy as np

from core.label_config import kind_of
from core.labeled_set import AUTO_KEY, auto_label, auto_result, split_tasks
from plugins.confident import ConfidentRule
from worker.publish import confident_summary, served_ranks
from worker.task_fields import CONFIDENT_VIEW_TITLE, confident_view_data, fields_of

CONFIG = ('<View><Image name="img" value="$image"/><Choices name="label" toName="img">'
          '<Choice value="ok"/><Choice value="defect"/></Choices></View>')
KIND = kind_of(CONFIG)
RULE = ConfidentRule(target=0.99, level=0.95, inverse_temperature=1.3, held_out=400, needed=299, threshold=0.97,
                     above=320, correct=319, lower_bound=0.9913)


def _regions(label: str) -> list[dict]:
    return KIND.regions(np.eye(2)[KIND.labels.index(label)], 0.5)


def test_served_ranks_put_confident_tasks_after_all_others_each_in_the_strategys_order():
    ranks = np.array([3, 0, 4, 1, 2])
    confident = np.array([False, True, False, False, True])
    served = served_ranks(ranks, confident)
    # unsure by strategy rank: task 3 (rank 1), 0 (3), 2 (4); then the confident ones: 1 (0), 4 (2)
    assert served.tolist() == [1, 3, 2, 0, 4]
    assert served_ranks(ranks, np.zeros(5, dtype=bool)).tolist() == ranks.tolist()


def test_a_confident_tasks_fields_say_so_with_the_measured_precision_and_its_bound():
    row = {"rank": 9, "label": "ok", "confidence": 0.995, "entropy": 0.03, "confident": True}
    fields = fields_of(row, 10, "margin", "v2", "entropy", RULE)
    assert fields["lsal_confident"] == 1
    assert fields["lsal_reason"].startswith("lsal: confident pre-label ok (model v2)")
    assert "0.9700" in fields["lsal_reason"] and "319/320" in fields["lsal_reason"] and "0.991" in fields["lsal_reason"]
    unsure = fields_of({**row, "confident": False}, 10, "margin", "v2", "entropy", RULE)
    assert unsure["lsal_confident"] == 0 and unsure["lsal_reason"].startswith("lsal: rank 10 of 10 by margin")


def test_the_confident_tab_lists_unlabeled_tasks_marked_confident():
    view = confident_view_data()
    assert view["title"] == CONFIDENT_VIEW_TITLE
    filters = {f["filter"]: f["value"] for f in view["filters"]["items"]}
    assert filters == {"filter:tasks:total_annotations": 0, "filter:tasks:data.lsal_confident": 1}
    assert view["columnsDisplayType"]["tasks:data.lsal_confident"] == "Number"


def test_a_publications_summary_counts_the_pool_above_the_threshold():
    summary = confident_summary(RULE, np.array([True, False, True, False]))
    assert summary["pool_above"] == 2 and summary["pool"] == 4 and summary["pool_share"] == 0.5
    assert summary["precision"] == 319 / 320 and summary["threshold"] == 0.97
    assert confident_summary(None, np.zeros(3, dtype=bool)) is None


def test_saved_pre_labels_are_neither_labeled_nor_unlabeled_until_a_person_corrects_one():
    saved = {"id": 20, "result": auto_result(_regions("ok"), "ok", "v2"), "updated_at": "2026-01-01"}
    corrected = {"id": 21, "result": [{**_regions("defect")[0], AUTO_KEY: {"label": "ok", "version": "v2"}}],
                 "updated_at": "2026-01-01"}
    tasks = [{"id": 1, "data": {"image": "a"}, "annotations": [saved]},
             {"id": 2, "data": {"image": "b"}, "annotations": [corrected]},
             {"id": 3, "data": {"image": "c"}, "annotations": [{"id": 22, "result": _regions("ok"),
                                                                 "updated_at": "2026-01-01"}]}]
    sets = split_tasks(tasks, KIND)
    assert sets.auto_labeled == [1]
    assert sets.labeled == [(2, "b", "defect"), (3, "c", "ok")]  # the correction is a human label
    assert sets.unlabeled == [] and sorted(sets.annotation_ids) == [21, 22]
    assert auto_label(saved) and not auto_label({"result": _regions("ok")}) and not auto_label({})
