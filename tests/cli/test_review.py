"""`lsal review --project N`: the flagged labels as a table (or JSON), from the project's store."""

from __future__ import annotations

import json

from redis import Redis

from core.store import ProjectStore


def review_record() -> dict:
    """What the review job stores (worker/review.py): two of three labels flagged."""
    items = [{"task": 11, "rank": 1, "given": "ok", "predicted": "scratch", "confidence": 0.97,
              "given_probability": 0.02, "quality": 0.02, "issue_score": 0.98, "flagged": True},
             {"task": 12, "rank": 2, "given": "dent", "predicted": "stain", "confidence": 0.8,
              "given_probability": 0.1, "quality": 0.1, "issue_score": 0.9, "flagged": True},
             {"task": 13, "rank": 3, "given": "ok", "predicted": "ok", "confidence": 0.9,
              "given_probability": 0.9, "quality": 0.9, "issue_score": 0.1, "flagged": False}]
    return {"version": "v3", "created_at": 1.7e9, "kind": "image_classification", "model": "logistic",
            "labeled": 3, "reviewed": 3, "flagged": 2, "folds": 2, "method": "confident learning",
            "multilabel": False, "not_reviewed": [], "skipped": 0, "items": items}


def test_review_before_any_review_says_when_there_will_be_one(run):
    out = run("review", "--project", "8")
    assert out.exit_code == 0 and "no review yet" in out.output


def test_review_shows_the_flagged_labels_with_the_models_label_and_confidence(run, redis_url):
    ProjectStore(Redis.from_url(redis_url), 8).set_review(review_record())
    out = run("review", "--project", "8")
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "2 of 3 labels flagged" in text and "2-fold" in text and "v3" in text
    lines = [line for line in out.output.splitlines() if " 11 " in line or " 12 " in line or " 13 " in line]
    assert len(lines) == 2 and "scratch" in lines[0] and "0.970" in lines[0] and "yes" in lines[0]
    every = run("review", "--project", "8", "--all", "--json")
    assert [i["task"] for i in json.loads(every.output)["items"]] == [11, 12, 13]
    assert "label review: 2 of 3 labels flagged" in run("status", "--project", "8").output
