"""`lsal strategy/settings/status/versions`: the admin CLI over the same code and Redis as the HTTP API."""

from __future__ import annotations

import json

import pytest
from redis import Redis
from rq import Queue
from typer.testing import CliRunner

from cli.main import app
from cli.admin import parse_extra
from core.config import get_settings
from core.store import ProjectStore


@pytest.fixture
def run(redis_url, monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LSAL_SECRET", "cli-secret")
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args))
    get_settings.cache_clear()


def test_parse_extra_reads_json_values_and_flags():
    assert parse_extra(["--mc-samples", "20", "--dtype=float64", "--flag", "--k", "2.5"]) == \
        {"mc_samples": 20, "dtype": "float64", "flag": True, "k": 2.5}
    with pytest.raises(ValueError):
        parse_extra(["20"])


def test_strategy_set_stores_routes_params_and_rescores_now(run, redis_url):
    out = run("strategy", "set", "--project", "7", "bald", "--mc-samples", "20", "--now")
    assert out.exit_code == 0, out.output
    settings = ProjectStore(Redis.from_url(redis_url), 7).settings(get_settings().defaults)
    assert settings.strategy.name == "bald" and settings.model.params["mc_samples"] == 20
    assert len(Queue("lsal", connection=Redis.from_url(redis_url)).job_ids) == 1
    shown = run("strategy", "get", "--project", "7")
    assert json.loads(shown.output)["strategy"]["name"] == "bald"


def test_bad_settings_exit_2_with_a_message_and_change_nothing(run, redis_url):
    run("strategy", "set", "--project", "3", "margin")
    for args, text in [(("strategy", "set", "--project", "3", "nope"), "available"),
                       (("strategy", "set", "--project", "3", "badge", "--batch-size", "-2"), "batch_size"),
                       (("settings", "--project", "3", "--set", "retrain_every=0"), "retrain_every"),
                       (("settings", "--project", "3", "--set", "nonsense"), "key=value")]:
        out = run(*args)
        assert out.exit_code == 2 and text in out.output, (args, out.output)
    assert ProjectStore(Redis.from_url(redis_url), 3).settings(get_settings().defaults).strategy.name == "margin"


def test_status_and_versions_show_the_project(run, redis_url):
    store = ProjectStore(Redis.from_url(redis_url), 5)
    store.add_version({"version": store.next_version(), "labeled": 12, "created_at": 1.7e9,
                       "metrics": {"holdout_accuracy": 0.75, "holdout_macro_f1": 0.7}})
    out = run("status", "--project", "5")
    assert out.exit_code == 0, out.output
    # nothing stored and no service to ask: the CLI says so, never its own defaults (tests/cli/test_admin_status.py)
    assert "settings unknown here" in out.output and "strategy badge" not in out.output
    assert "v1" in out.output and "0.750" in out.output
    data = json.loads(run("status", "--project", "5", "--json").output)
    assert data["current_version"] == "v1" and data["queue"]["queued"] == 0
    assert "cli-secret" not in out.output


def test_commands_fail_clearly_when_redis_is_unreachable(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(app, ["status", "--project", "1"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 2 and "cannot reach Redis" in out.output
