"""Who may call what: a shared secret for /webhook and /admin, optional basic auth for every route."""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache
from typing import Any

from fastapi import HTTPException, Request

from backend.config import Settings

SECRET_HEADER = "X-LSAL-Secret"
OPEN_PATHS = frozenset({"/health"})


@lru_cache(maxsize=4)
def secret_tag(secret: str | None) -> str | None:
    """A one-way tag of the secret (slow PBKDF2), stored beside the webhook it was registered with so that a
    rotated LSAL_SECRET is noticed without the secret itself ever being stored."""
    if not secret:
        return None
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), b"lsal-webhook-secret", 200_000, dklen=12).hex()


def webhook_outdated(info: dict[str, Any], url: str, secret: str | None) -> bool:
    """Whether the project's registered webhook (per the store's info) is not `url` with this secret."""
    return info.get("webhook_url") != url or info.get("webhook_secret_tag") != secret_tag(secret)


def _equal(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; False when either side is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _basic(request: Request) -> tuple[str, str] | None:
    """(user, password) from an Authorization: Basic header, or None."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


def basic_auth_ok(settings: Settings, request: Request) -> bool:
    """Whether the request passes the optional basic auth (always, when BASIC_AUTH_USER/PASS are unset)."""
    if not settings.basic_auth_user or settings.basic_auth_pass is None:
        return True
    creds = _basic(request)
    return creds is not None and _equal(creds[0], settings.basic_auth_user) and \
        _equal(creds[1], settings.basic_auth_pass.get_secret_value())


def require_secret(settings: Settings, request: Request) -> None:
    """Raise 401 unless the request carries the secret (header, Bearer, or basic-auth password), 503 if unset.

    Label Studio's own calls (the "Start Training" button) carry the ML backend connection's basic-auth
    credentials: the configured BASIC_AUTH_USER/PASS, or any user with LSAL_SECRET as the password.
    """
    if settings.secret is None:
        raise HTTPException(503, "LSAL_SECRET is not set: admin and webhook routes are disabled until it is")
    secret = settings.secret.get_secret_value()
    if _equal(request.headers.get(SECRET_HEADER), secret):
        return
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and _equal(auth[7:].strip(), secret):
        return
    creds = _basic(request)
    if creds is not None:
        if settings.basic_auth_user and settings.basic_auth_pass is not None:
            if basic_auth_ok(settings, request):
                return
        elif _equal(creds[1], secret):
            return
    raise HTTPException(401, f"missing or wrong secret: send the {SECRET_HEADER} header (or Bearer token) "
                             "holding LSAL_SECRET", headers={"WWW-Authenticate": "Basic"})
