"""The `lsal` command line, run in-process as a user would type it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from plugins.simulation import read_csv
from plugins.strategies import STRATEGIES

runner = CliRunner()


def _text(result) -> str:
    """The output with rich's box drawing removed and whitespace collapsed (error panels wrap lines)."""
    return " ".join(result.output.replace("│", " ").split())


def test_strategies_lists_every_registered_strategy_with_its_inputs() -> None:
    result = runner.invoke(app, ["strategies", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == STRATEGIES.names()
    badge = next(r for r in rows if r["name"] == "badge")
    assert badge["needs"] == ["embeddings", "probs"] and badge["params"]["batch_size"] == 50


def test_demo_runs_the_loop_and_prints_accuracy_per_round(tmp_path) -> None:
    result = runner.invoke(app, ["demo", "--offline", "--strategies", "random,margin", "--seeds", "1",
                                 "--rounds", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "margin" in result.output and "vs random" in result.output
    assert (tmp_path / "learning_curve.png").is_file()


def test_simulate_then_report_merges_runs(tmp_path) -> None:
    for name, first_seed in (("random", "0"), ("margin", "1")):
        _simulate(tmp_path / name, name, first_seed)
    result = runner.invoke(app, ["report", str(tmp_path / "random"), str(tmp_path / "margin"), "--target",
                                 "0.5", "--out", str(tmp_path / "both")])
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "both" / "summary.md").read_text()
    assert "| random |" in summary and "| margin |" in summary
    rows, _ = read_csv(tmp_path / "both" / "results.csv")
    assert {(r.strategy, r.seed) for r in rows} == {("random", 0), ("margin", 1)}
    _simulate(tmp_path / "random_more", "random", "1")
    result = runner.invoke(app, ["report", str(tmp_path / "both"), str(tmp_path / "random_more"),
                                 "--target", "0.5", "--out", str(tmp_path / "uneven")])
    assert result.exit_code == 0, result.output
    uneven = (tmp_path / "uneven" / "summary.md").read_text()
    assert "over each strategy's seeds" in uneven  # random has 2 seeds, margin 1: each counted on its own
    assert "| 2/2 |" in uneven and "| 1/1 |" in uneven


def _simulate(out, strategy: str, first_seed: str) -> None:
    """One seed of a small digits simulation into `out`."""
    result = runner.invoke(app, ["simulate", "--strategies", strategy, "--seeds", "1",
                                 "--first-seed", first_seed, "--budget", "30", "--target", "0.5",
                                 "--model-param", "committee=1", "--out", str(out)])
    assert result.exit_code == 0, result.output


def test_bad_input_gets_a_clear_message_and_a_non_zero_exit(tmp_path) -> None:
    result = runner.invoke(app, ["simulate", "--strategies", "nope", "--budget", "30", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown strategy 'nope'" in _text(result)
    result = runner.invoke(app, ["simulate", "--model-param", "oops", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "key=value" in _text(result)
    result = runner.invoke(app, ["simulate", "--first-seed", "-1", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--first-seed" in _text(result)
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in _text(result)
