"""Fixtures for backend tests: settings pointing at the test's own Redis, and the app under test."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from core.tokens import SECRET_HEADER
from core.config import Settings

SECRET = "s3cret-for-tests-only"


@pytest.fixture
def settings_factory(redis_url: str, tmp_path) -> Callable[..., Settings]:
    """Settings for this test's Redis and a temp model dir; keyword overrides by field name."""

    def make(**overrides) -> Settings:
        values = dict(redis_url=redis_url, secret=SECRET, model_dir=tmp_path / "models",
                      label_studio_url="http://127.0.0.1:9", label_studio_api_key=None)
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def client(settings_factory) -> TestClient:
    """The backend app with the test secret set."""
    return TestClient(create_app(settings_factory()))


@pytest.fixture
def auth() -> dict[str, str]:
    """Headers carrying the test secret."""
    return {SECRET_HEADER: SECRET}
