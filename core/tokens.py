"""The credentials derived from LSAL_SECRET: a project's webhook token, and a one-way tag that notices a rotation.

Pure functions of the secret, shared by the backend (which checks them) and the worker (which registers the
webhooks that carry them).
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

SECRET_HEADER = "X-LSAL-Secret"
WEBHOOK_TOKEN_HEADER = "X-LSAL-Webhook-Token"


def webhook_token(secret: str, project: int) -> str:
    """The token that authenticates project `project`'s webhook events (an HMAC of the secret)."""
    return hmac.new(secret.encode(), f"lsal-webhook:{int(project)}".encode(), hashlib.sha256).hexdigest()[:40]


@lru_cache(maxsize=4096)  # one tag per project token
def secret_tag(secret: str | None) -> str | None:
    """A one-way tag of the secret (slow PBKDF2), stored beside the webhook it was registered with so that a
    rotated LSAL_SECRET is noticed without the secret itself ever being stored."""
    if not secret:
        return None
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), b"lsal-webhook-secret", 200_000, dklen=12).hex()


def webhook_outdated(info: dict[str, Any], url: str | None, token: str | None) -> bool:
    """Whether the project's registered webhook (per the store's info) is not `url` (any URL when None)
    with this token."""
    registered = info.get("webhook_url")
    return not registered or (url is not None and registered != url) or \
        info.get("webhook_secret_tag") != secret_tag(token)
