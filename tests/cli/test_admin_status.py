"""`lsal status` shows the settings in force: stored ones, else the service's own LSAL_DEFAULTS as its admin
API resolves them; never the CLI process's defaults (issue 17: it printed badge / cnn while the service ran
margin / logistic)."""

from __future__ import annotations

import json

from redis import Redis

from core.project_settings import ProjectSettings
from core.store import ProjectStore


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_status_shows_the_services_defaults_not_the_clis(run, service):
    out = run("status", "--project", "8")
    assert out.exit_code == 0, out.output
    assert "strategy margin" in out.output and "model logistic" in out.output, out.output
    assert "badge" not in out.output and "cnn" not in out.output
    assert "LSAL_DEFAULTS" in out.output  # says where they come from
    data = json.loads(run("status", "--project", "8", "--json").output)
    assert data["settings"]["strategy"]["name"] == "margin" and data["settings"]["retrain_every"] == 7
    assert data["settings_stored"] is False and service == ["http://backend.test:9090"] * 2


def test_settings_and_strategy_get_show_the_services_defaults_too(run, service):
    shown = json.loads(run("settings", "--project", "8").output)
    assert shown["strategy"]["name"] == "margin" and shown["model"]["name"] == "logistic"
    assert json.loads(run("strategy", "get", "--project", "8").output)["strategy"]["name"] == "margin"


def test_a_change_merges_into_the_services_defaults(run, service, redis_url):
    out = run("strategy", "set", "--project", "9", "entropy")
    assert out.exit_code == 0, out.output
    stored = ProjectStore(Redis.from_url(redis_url), 9).stored_settings()
    assert stored["strategy"]["name"] == "entropy"
    assert stored["model"]["name"] == "logistic" and stored["retrain_every"] == 7  # not the CLI's cnn / 10


def test_stored_settings_are_shown_without_asking_the_service(run, redis_url):
    ProjectStore(Redis.from_url(redis_url), 6).set_settings(
        ProjectSettings.model_validate({"strategy": {"name": "entropy"}, "model": {"name": "logistic"}}))
    out = run("status", "--project", "6")
    assert out.exit_code == 0 and "strategy entropy" in out.output and "(stored)" in out.output, out.output


def test_without_a_service_status_says_it_cannot_know_instead_of_printing_its_defaults(run):
    out = run("status", "--project", "8")
    assert out.exit_code == 0, out.output
    assert "badge" not in out.output and "cnn" not in out.output, out.output
    text = _flat(out.output)
    assert "no stored settings" in text and "LSAL_URL" in text, text
    data = json.loads(run("status", "--project", "8", "--json").output)
    assert data["settings"] is None and "LSAL_URL" in data["settings_unknown"]
    assert "badge" not in run("settings", "--project", "8").output


def test_an_unreachable_service_is_named(run, monkeypatch):
    monkeypatch.setenv("LSAL_URL", "http://127.0.0.1:9")
    out = run("status", "--project", "8")
    assert out.exit_code == 0 and "did not answer" in _flat(out.output) and "badge" not in out.output
