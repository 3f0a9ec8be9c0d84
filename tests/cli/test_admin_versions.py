"""Held-out accuracy of a version comes with its number of held-out items and a Wilson 95% interval, and
is not shown below MIN_HOLDOUT items (issue 17: "held-out acc 1.000" at 10 labels from a few items)."""

from __future__ import annotations

import json

from redis import Redis

from core.admin import MIN_HOLDOUT
from core.store import ProjectStore


def _versions(redis_url: str, project: int, *rows: tuple[int, float]) -> None:
    store = ProjectStore(Redis.from_url(redis_url), project)
    for n, acc in rows:
        store.add_version({"version": store.next_version(), "labeled": 5 * n, "created_at": 1.7e9,
                           "metrics": {"holdout_accuracy": acc, "holdout_macro_f1": acc - 0.1, "holdout_size": n}})


def test_versions_hide_accuracy_from_a_handful_of_items_and_give_n_and_an_interval(run, redis_url):
    _versions(redis_url, 4, (3, 1.0), (40, 0.75))
    out = run("versions", "--project", "4")
    assert out.exit_code == 0, out.output
    assert "1.000" not in out.output and "0.900" not in out.output, out.output  # 3 items: neither acc nor F1
    assert f"- (n < {MIN_HOLDOUT})" in out.output
    assert "0.750 (0.598-0.858)" in out.output and " 40 " in out.output, out.output  # Wilson 95%, n = 40
    assert f"from {MIN_HOLDOUT} held-out items" in " ".join(out.output.split())


def test_versions_json_and_status_carry_n_and_the_interval(run, redis_url):
    _versions(redis_url, 5, (3, 1.0), (40, 0.75))
    rows = json.loads(run("versions", "--project", "5", "--json").output)
    assert rows[0]["holdout"] == {"n": 3, "accuracy": None, "interval95": None, "min_n": MIN_HOLDOUT,
                                  "shown": False}
    assert rows[1]["holdout"]["n"] == 40 and rows[1]["holdout"]["interval95"] == [0.5981, 0.8581]
    status = json.loads(run("status", "--project", "5", "--json").output)
    assert [v["holdout"]["shown"] for v in status["versions"]] == [False, True]
    text = run("status", "--project", "5").output
    assert "1.000" not in text and "0.750 (0.598-0.858)" in text
