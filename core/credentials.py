"""Which Label Studio token to use for a project, and how /setup proves that a project exists.

Label Studio is always the one at LABEL_STUDIO_URL: the hostname a /setup request names is never used. The
token is LABEL_STUDIO_API_KEY, or else the one /setup delivered, kept only after it worked against
LABEL_STUDIO_URL for that very project.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass

from redis import Redis

from core.config import Settings
from core.ls_client import LabelStudioClient, LabelStudioError, NoTokenError

_CLIENTS: dict[tuple[str, str], LabelStudioClient] = {}
_LOCK = threading.Lock()
CONFIRM_TIMEOUT_S = 2.0  # Label Studio waits 3 s for /setup (ML_TIMEOUT_SETUP); the check must fit in it
CONFIRMED_TTL_S = 300.0  # Label Studio calls /setup whenever it refreshes the model's state


def credentials_key(project: int) -> str:
    """Redis key of the token Label Studio delivered with /setup for `project` (after it was checked)."""
    return f"lsal:p:{project}:ls_credentials"


class SetupRefused(Exception):
    """Label Studio did not confirm a /setup; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


@dataclass
class _Bucket:
    """A token bucket: `rate` checks per second, bursts of up to 2 * rate."""

    rate: float
    tokens: float = 0.0
    at: float = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        capacity = max(1.0, 2 * self.rate)
        self.tokens = capacity if not self.at else min(capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ProjectConfirmer:
    """Asks Label Studio (at LABEL_STUDIO_URL) whether a project exists and a token may read it; rate-limited,
    with the positive answers remembered for a while."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._bucket = _Bucket(settings.setup_checks_per_s)
        self._confirmed: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def confirm(self, project: int, delivered_token: str | None) -> str | None:
        """The delivered token when it must be kept (no LABEL_STUDIO_API_KEY), else None; SetupRefused when
        Label Studio does not confirm the project with the token we would use."""
        env_key = self.settings.label_studio_api_key
        token = env_key.get_secret_value() if env_key is not None else delivered_token
        if not token:
            raise SetupRefused(403, "no Label Studio token to check the project with: set LABEL_STUDIO_API_KEY, "
                                    "or connect the model from Label Studio (its /setup delivers one)")
        key = (project, hashlib.sha256(token.encode()).hexdigest())
        with self._lock:
            if self._confirmed.get(key, 0.0) > time.monotonic():
                return None if env_key is not None else token
            if not self._bucket.take():
                raise SetupRefused(429, "too many /setup calls that Label Studio must confirm; retry shortly")
        url = self.settings.label_studio_url
        client = LabelStudioClient(url, token, timeout=CONFIRM_TIMEOUT_S, max_retries=0)
        try:
            client.project(project)
        except LabelStudioError as exc:
            text = str(exc)
            if "HTTP 404" in text:
                raise SetupRefused(404, f"Label Studio at LABEL_STUDIO_URL={url} has no project {project}") from None
            if "HTTP 401" in text or "HTTP 403" in text:
                which = "LABEL_STUDIO_API_KEY" if env_key is not None else "the token this /setup delivered"
                raise SetupRefused(403, f"Label Studio at LABEL_STUDIO_URL={url} refuses {which} for project "
                                        f"{project}") from None
            raise SetupRefused(502, f"cannot confirm project {project} with Label Studio at LABEL_STUDIO_URL="
                                    f"{url} (set it to where this backend reaches Label Studio): {text}") from None
        finally:
            client.close()
        with self._lock:
            self._confirmed[key] = time.monotonic() + CONFIRMED_TTL_S
            if len(self._confirmed) > 10_000:  # bounded: drop the expired ones
                now = time.monotonic()
                self._confirmed = {k: v for k, v in self._confirmed.items() if v > now}
        return None if env_key is not None else token


def remember_token(redis: Redis, project: int, token: str) -> None:
    """Keep the token /setup delivered for `project` (only after ProjectConfirmer confirmed it)."""
    redis.set(credentials_key(project), json.dumps({"token": token}))


def client_for(settings: Settings, redis: Redis, project: int) -> LabelStudioClient:
    """A (cached) client for the project at LABEL_STUDIO_URL; LabelStudioError naming what to set when there
    is no token."""
    if settings.label_studio_api_key is not None:
        token = settings.label_studio_api_key.get_secret_value()
    else:
        raw = redis.get(credentials_key(project))
        if raw is None:
            raise NoTokenError(f"no Label Studio token for project {project}: set LABEL_STUDIO_API_KEY, or "
                                   "reconnect the model in Label Studio so that /setup delivers one")
        token = json.loads(raw)["token"]
    url = settings.label_studio_url
    with _LOCK:
        client = _CLIENTS.get((url, token))
        if client is None:
            client = _CLIENTS[(url, token)] = LabelStudioClient(url, token)
    return client
