"""Task fields: the model's reasons as they are written into a task's data and our Data Manager tab."""

from __future__ import annotations

from worker.task_fields import FIELDS, VIEW_TITLE, fields_of, merged, reason, view_data


def test_the_fields_of_a_published_task_say_rank_strategy_model_prediction_and_uncertainty() -> None:
    row = {"rank": 0, "score": 0.0, "label": "scratch", "confidence": 0.41234, "entropy": 1.23456, "value": 0.5}
    fields = fields_of(row, 190, "badge", "v4", "entropy")
    assert set(fields) == set(FIELDS)
    assert fields["lsal_rank"] == 1  # people count from 1
    assert fields["lsal_uncertainty"] == 1.2346 and fields["lsal_confidence"] == 0.4123
    assert (fields["lsal_prediction"], fields["lsal_strategy"], fields["lsal_model"]) == ("scratch", "badge", "v4")
    assert fields["lsal_reason"] == ("lsal: rank 1 of 190 by badge (model v4); predicted scratch, confidence 0.412, "
                                     "entropy 1.235")
    assert fields["lsal_reason"] == reason(1, 190, "badge", "scratch", 0.41234, "entropy", 1.23456, "v4")


def test_merging_keeps_every_field_of_the_task_and_replaces_only_ours() -> None:
    data = {"image": "/data/upload/1/a.png", "site": "line 3", "lsal_rank": 7, "lsal_model": "v1",
            "lsal_issue_rank": 2}
    new = merged(data, {"lsal_rank": 1, "lsal_reason": "r"})
    # the review's lsal_issue_* fields are the review's to replace
    assert new == {"image": "/data/upload/1/a.png", "site": "line 3", "lsal_issue_rank": 2, "lsal_rank": 1,
                   "lsal_reason": "r"}
    assert data["lsal_rank"] == 7  # the input is not changed
    assert merged(new, {"lsal_rank": 1, "lsal_reason": "r"}) == new  # unchanged fields: nothing to write


def test_our_tab_lists_the_unlabeled_tasks_by_numeric_rank() -> None:
    view = view_data()
    assert view["title"] == VIEW_TITLE and view["ordering"] == ["tasks:data.lsal_rank"]
    (only,) = view["filters"]["items"]
    assert only["filter"] == "filter:tasks:total_annotations" and only["value"] == 0
    # Label Studio orders a data field as text unless the view types it as a number ("10" < "9")
    assert view.get("columnsDisplayType", {}).get("tasks:data.lsal_rank") == "Number"
    assert not any(c.startswith("tasks:data.") for c in view["hiddenColumns"]["explore"])
