"""`lsal review --project N`: the flagged labels as a table (or JSON), from the project's store."""

from __future__ import annotations

import json

from redis import Redis

from core.store import ProjectStore


def test_review_before_any_review_says_when_there_will_be_one(run):
    out = run("review", "--project", "8")
    assert out.exit_code == 0 and "no review yet" in out.output


def test_review_shows_the_flagged_labels_with_the_models_label_and_confidence(run, redis_url, review_record):
    ProjectStore(Redis.from_url(redis_url), 8).set_review(review_record)
    out = run("review", "--project", "8")
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "2 of 3 labels flagged" in text and "2-fold" in text and "v3" in text
    lines = [line for line in out.output.splitlines() if " 11 " in line or " 12 " in line or " 13 " in line]
    assert len(lines) == 2 and "scratch" in lines[0] and "0.970" in lines[0] and "yes" in lines[0]
    every = run("review", "--project", "8", "--all", "--json")
    assert [i["task"] for i in json.loads(every.output)["items"]] == [11, 12, 13]
    assert "label review: 2 of 3 labels flagged" in run("status", "--project", "8").output
