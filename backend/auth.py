"""Who may call what: a shared secret for /admin, the secret or a per-project token for /webhook, optional
basic auth for every other route.

The webhooks the worker registers in Label Studio never carry LSAL_SECRET: Label Studio shows a webhook's
headers to whoever may list the project's webhooks. They carry a token derived from the secret for that one
project, which lets its holder send that project's events and nothing else.
"""

from __future__ import annotations

import base64
import hmac

from fastapi import HTTPException, Request

from core.config import Settings
from core.tokens import SECRET_HEADER, WEBHOOK_TOKEN_HEADER, webhook_token

OPEN_PATHS = frozenset({"/health"})
# routes that check their own credentials (the secret or a project's webhook token) in every auth mode, so
# the webhooks the worker registers are accepted whether or not BASIC_AUTH_USER/PASS are set
SELF_AUTHENTICATED = frozenset({"/webhook"})


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


def has_secret(settings: Settings, request: Request) -> bool:
    """Whether the request carries LSAL_SECRET (header, Bearer, or the basic-auth password); see require_secret."""
    if settings.secret is None:
        return False
    secret = settings.secret.get_secret_value()
    if _equal(request.headers.get(SECRET_HEADER), secret):
        return True
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and _equal(auth[7:].strip(), secret):
        return True
    creds = _basic(request)
    if creds is None:
        return False
    if settings.basic_auth_user and settings.basic_auth_pass is not None:
        return basic_auth_ok(settings, request)
    return _equal(creds[1], secret)


def actor(request: Request) -> str:
    """Who made an authenticated admin call, for the audit record (never a secret)."""
    creds = _basic(request)
    user = creds[0] if creds else None
    via = request.headers.get("x-lsal-actor", "")[:80]  # the lsal CLI says which user@host runs it
    who = via or (f"basic user {user!r}" if user else "holder of LSAL_SECRET")
    host = request.client.host if request.client else "?"
    return f"{who} from {host}"


def require_webhook_auth(settings: Settings, request: Request, project: int) -> None:
    """Raise 401 unless the request carries the secret or project `project`'s webhook token (503 if unset)."""
    if settings.secret is None:
        raise HTTPException(503, "LSAL_SECRET is not set: webhook routes are disabled until it is")
    token = webhook_token(settings.secret.get_secret_value(), project)
    if _equal(request.headers.get(WEBHOOK_TOKEN_HEADER), token) or has_secret(settings, request):
        return
    raise HTTPException(401, f"missing or wrong credentials: a webhook carries the {WEBHOOK_TOKEN_HEADER} header "
                             f"of its project (registered by the worker) or {SECRET_HEADER}",
                        headers={"WWW-Authenticate": "Basic"})


def require_secret(settings: Settings, request: Request) -> None:
    """Raise 401 unless the request carries the secret (header, Bearer, or basic-auth password), 503 if unset.

    Label Studio's own calls (the "Start Training" button) carry the ML backend connection's basic-auth
    credentials: the configured BASIC_AUTH_USER/PASS, or any user with LSAL_SECRET as the password.
    """
    if settings.secret is None:
        raise HTTPException(503, "LSAL_SECRET is not set: admin and webhook routes are disabled until it is")
    if has_secret(settings, request):
        return
    raise HTTPException(401, f"missing or wrong secret: send the {SECRET_HEADER} header (or Bearer token) "
                             "holding LSAL_SECRET", headers={"WWW-Authenticate": "Basic"})
