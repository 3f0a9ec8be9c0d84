"""Fixtures for the admin CLI: `run` invokes `lsal` against the test's Redis with this process's own
(built-in) defaults; `service` is a backend whose LSAL_DEFAULTS differ, reachable at LSAL_URL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from backend.app import create_app
from core.config import Settings, get_settings

SECRET = "cli-service-secret"
SERVICE_DEFAULTS = {"strategy": {"name": "margin", "params": {}}, "model": {"name": "logistic", "params": {}},
                    "retrain_every": 7}


@pytest.fixture
def run(redis_url, monkeypatch, tmp_path) -> Callable[..., object]:
    for name in ("LSAL_DEFAULTS", "LSAL_URL", "LSAL_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LSAL_SECRET", SECRET)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    from cli.main import app

    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(args))
    get_settings.cache_clear()


@pytest.fixture
def service(redis_url, monkeypatch, tmp_path) -> Callable[[str], TestClient]:
    """The backend with LSAL_DEFAULTS = SERVICE_DEFAULTS on the same Redis; the CLI's HTTP client for
    LSAL_URL is the app's test client (what `lsal serve` would answer)."""
    settings = Settings(redis_url=redis_url, secret=SECRET, model_dir=tmp_path / "service-models",
                        label_studio_url="http://127.0.0.1:9", label_studio_api_key=None, reconcile_s=0,
                        defaults=SERVICE_DEFAULTS)
    app = create_app(settings)
    asked: list[str] = []

    def client(url: str) -> TestClient:
        asked.append(url)
        return TestClient(app, base_url=url)

    monkeypatch.setattr("cli.admin._service_client", client)
    monkeypatch.setenv("LSAL_URL", "http://backend.test:9090")
    get_settings.cache_clear()
    return asked
