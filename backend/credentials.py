"""Which Label Studio URL and token to use for a project: the environment's, else what /setup delivered."""

from __future__ import annotations

import json
import threading

from redis import Redis

from backend.config import Settings
from backend.ls_client import LabelStudioClient, LabelStudioError

_CLIENTS: dict[tuple[str, str], LabelStudioClient] = {}
_LOCK = threading.Lock()


def credentials_key(project: int) -> str:
    """Redis key of the hostname/token Label Studio sent with /setup for `project`."""
    return f"lsal:p:{project}:ls_credentials"


def remember_setup_credentials(redis: Redis, project: int, hostname: object, token: object) -> bool:
    """Keep /setup's hostname and access token for a project (used only when LABEL_STUDIO_API_KEY is unset)."""
    if not (isinstance(hostname, str) and hostname.startswith(("http://", "https://")) and isinstance(token, str)
            and token):
        return False
    redis.set(credentials_key(project), json.dumps({"hostname": hostname.rstrip("/"), "token": token}))
    return True


def client_for(settings: Settings, redis: Redis, project: int) -> LabelStudioClient:
    """A (cached) client for the project; LabelStudioError naming what to set when there is no token."""
    if settings.label_studio_api_key is not None:
        url, token = settings.label_studio_url, settings.label_studio_api_key.get_secret_value()
    else:
        raw = redis.get(credentials_key(project))
        if raw is None:
            raise LabelStudioError(f"no Label Studio token for project {project}: set LABEL_STUDIO_API_KEY, or "
                                   "reconnect the model in Label Studio so that /setup delivers one")
        creds = json.loads(raw)
        # an explicit LABEL_STUDIO_URL wins over the hostname Label Studio believes it has
        url = settings.label_studio_url if "label_studio_url" in settings.model_fields_set else creds["hostname"]
        token = creds["token"]
    with _LOCK:
        client = _CLIENTS.get((url, token))
        if client is None:
            client = _CLIENTS[(url, token)] = LabelStudioClient(url, token)
    return client
