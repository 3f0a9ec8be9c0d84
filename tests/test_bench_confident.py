"""bench/confident_labels.py in quick mode: rows per round, seed and target, measured against the ground truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import confident_labels  # noqa: E402
from plugins.datasets import load_dataset  # noqa: E402


def _quick(tmp_path: Path, seeds: str) -> list[dict]:
    """The quick run's raw rows at target 0.9 (and 0.95) at level 0.9."""
    out = tmp_path / "rows.json"
    assert confident_labels.main(["--quick", "--target", "0.9", "--also", "0.95", "--level", "0.9",
                                  "--seeds", seeds, "--out", str(out)]) == 0
    return json.loads(out.read_text())["rows"]


def test_quick_run_writes_a_row_per_round_seed_and_target_with_precision_from_the_ground_truth(tmp_path,
                                                                                              capsys) -> None:
    rows = _quick(tmp_path, "0,1,2")
    printed = capsys.readouterr().out
    expected = [(s, n, t) for s in (0, 1, 2) for n in (300, 400, 500) for t in (0.9, 0.95)]
    assert sorted((r["seed"], r["labels"], r["target"]) for r in rows) == sorted(expected)
    pool = len(load_dataset("digits").y_train)
    assert any(r["threshold"] is not None and r["auto_labeled"] for r in rows)  # quick mode does set thresholds
    for r in rows:
        assert r["pool"] == pool - r["labels"] and 0.0 <= r["share"] <= 1.0
        assert r["share"] == r["auto_labeled"] / r["pool"] and 0 <= r["auto_right"] <= r["auto_labeled"]
        if r["threshold"] is None:
            assert r["auto_labeled"] == 0 and r["achieved"] is None and r["reason"]
            continue
        assert r["lower_bound"] >= r["target"] and r["above"] >= r["needed"]
        assert r["held_precision"] >= r["lower_bound"]
        if r["auto_labeled"]:
            assert np.isclose(r["achieved"], r["auto_right"] / r["auto_labeled"])
            assert r["met"] == (r["achieved"] >= r["target"])
    worst = min(r["achieved"] for r in rows if r["achieved"] is not None and r["target"] == 0.9)
    assert f"worst achieved precision {worst:.4f}" in printed
    met = all(r["met"] for r in rows if r["target"] == 0.9 and r["met"] is not None)
    assert f"goal at target 0.9 ({confident_labels.GOAL}): {'met' if met else 'NOT met'}" in printed


def test_auto_labeled_counts_are_the_served_models_right_answers_on_the_pool(tmp_path) -> None:
    """The first round recomputed here (the first version serves): the same confident and right counts."""
    from core.project_settings import ProjectSettings
    from plugins.confident import ConfidentRule
    from plugins.holdout import assign_holdout, split_indices
    from plugins.loop import initial_indices
    from plugins.models import build_model
    from worker.train import confident_block, fit_and_measure

    first = next(r for r in _quick(tmp_path, "1") if r["round"] == 0 and r["target"] == 0.9)
    data = load_dataset("digits")
    kind = confident_labels.kind_of(confident_labels.label_config(data.class_names))
    settings = ProjectSettings(holdout_fraction=0.2, confident_target=0.9, confident_level=0.9, seed=1)
    labeled = initial_indices(data.y_train, 300, 1)
    x, y = data.x_train[labeled], data.y_train[labeled]
    train_idx, held_idx = split_indices(labeled.tolist(), assign_holdout(labeled.tolist(), y, 0.2, 1, {}))
    model = build_model("logistic", 10, committee=1, seed=1)
    fitted = fit_and_measure(model, kind, settings, x, y, train_idx, held_idx, refit=False)
    rule = ConfidentRule.from_dict(confident_block(settings, kind, fitted.held_outputs, y[held_idx]))
    rest = np.setdiff1d(np.arange(len(data.y_train)), labeled)
    probs = model.predict_proba(data.x_train[rest])
    sure = rule.confident(probs)
    assert first["promoted"] and first["threshold"] == rule.threshold and first["auto_labeled"] == int(sure.sum())
    assert first["auto_right"] == int((sure & (probs.argmax(axis=1) == data.y_train[rest])).sum())
