"""bench/confident_labels.py in quick mode: rows per round and seed, measured against the ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import confident_labels  # noqa: E402
from plugins.datasets import load_dataset  # noqa: E402


def test_quick_run_writes_a_row_per_round_and_seed_with_precision_from_the_ground_truth(tmp_path, capsys) -> None:
    out = tmp_path / "rows.json"
    assert confident_labels.main(["--quick", "--target", "0.9", "--level", "0.9", "--seeds", "0,1,2",
                                  "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    labels = [300, 400, 500]
    assert sorted((r["seed"], r["labels"]) for r in rows) == [(s, n) for s in (0, 1, 2) for n in labels]
    pool = len(load_dataset("digits").y_train)
    assert any(r["threshold"] is not None for r in rows)  # the quick setting does set thresholds
    for r in rows:
        assert r["pool"] == pool - r["labels"] and 0.0 <= r["share"] <= 1.0
        assert r["share"] == r["auto_labeled"] / r["pool"] and 0 <= r["auto_right"] <= r["auto_labeled"]
        if r["threshold"] is None:
            assert r["auto_labeled"] == 0 and r["achieved"] is None and r["reason"]
            continue
        assert r["lower_bound"] >= 0.9 and r["above"] >= r["needed"]
        assert r["held_precision"] >= r["lower_bound"]
        if r["auto_labeled"]:
            assert np.isclose(r["achieved"], r["auto_right"] / r["auto_labeled"])
            assert r["met"] == (r["achieved"] >= 0.9)
    worst = min(r["achieved"] for r in rows if r["achieved"] is not None)
    assert f"worst achieved precision {worst:.4f}" in printed


def test_auto_labeled_counts_are_the_served_models_right_answers_on_the_pool(tmp_path) -> None:
    """The first round recomputed here: the same product path gives the same confident and right counts."""
    from core.project_settings import ProjectSettings
    from plugins.confident import ConfidentRule
    from plugins.loop import initial_indices
    from plugins.models import build_model
    from worker.train import confident_block, fit_and_measure, holdout_split

    out = tmp_path / "rows.json"
    confident_labels.main(["--quick", "--target", "0.9", "--level", "0.9", "--seeds", "1", "--out", str(out)])
    first = json.loads(out.read_text())["rows"][0]
    data = load_dataset("digits")
    kind = confident_labels.kind_of(confident_labels.label_config(data.class_names))
    settings = ProjectSettings(holdout_fraction=0.2, confident_target=0.9, confident_level=0.9, seed=1)
    labeled = initial_indices(data.y_train, 300, 1)
    x, y = data.x_train[labeled], data.y_train[labeled]
    train_idx, held_idx = holdout_split(y, 0.2, 1)
    model = build_model("logistic", 10, committee=1, seed=1)
    fitted = fit_and_measure(model, kind, settings, x, y, train_idx, held_idx)
    rule = ConfidentRule.from_dict(confident_block(settings, kind, fitted.held_outputs, y[held_idx]))
    rest = np.setdiff1d(np.arange(len(data.y_train)), labeled)
    probs = model.predict_proba(data.x_train[rest])
    sure = rule.confident(probs)
    assert first["threshold"] == rule.threshold and first["auto_labeled"] == int(sure.sum())
    assert first["auto_right"] == int((sure & (probs.argmax(axis=1) == data.y_train[rest])).sum())
