"""The settings the harness runs the stack with: fast project settings, and the services' environment."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

# Project settings that train and score in well under a second on 2 cores: logistic regression (one
# member, no bootstrap committee) on 8x8 grayscale, margin sampling, a retrain every 10 labels. The demo,
# the end-to-end tests (LSAL_DEFAULTS of `stack_factory`), the backend tests and the benchmarks use them;
# change a copy: `{**FAST_SETTINGS, "strategy": {"name": "bald"}}` or `fast_settings(strategy=...)`.
FAST_SETTINGS: dict[str, Any] = {
    "strategy": {"name": "margin"}, "model": {"name": "logistic", "params": {"committee": 1}},
    "image_size": 8, "channels": 1, "retrain_every": 10, "min_labels": 10, "holdout_fraction": 0.2,
}


def fast_settings(**changes: Any) -> dict[str, Any]:
    """A deep copy of FAST_SETTINGS with top-level `changes`."""
    return {**copy.deepcopy(FAST_SETTINGS), **changes}


def service_env(*, label_studio_url: str, redis_url: str, secret: str, model_dir: Path | str, image_hosts: str,
                defaults: dict[str, Any] | None = None, token: str | None = None,
                **extra: str) -> dict[str, str]:
    """The environment of `lsal serve` and `lsal worker` in a local stack: Label Studio (and its token,
    when given), Redis, LSAL_SECRET, the model dir, the allowed image hosts, the project defaults
    (FAST_SETTINGS unless given), unbuffered output; plus `extra`."""
    env = {"LABEL_STUDIO_URL": label_studio_url, "REDIS_URL": redis_url, "LSAL_SECRET": secret,
           "MODEL_DIR": str(model_dir), "LSAL_IMAGE_HOSTS": image_hosts,
           "LSAL_DEFAULTS": json.dumps(FAST_SETTINGS if defaults is None else defaults), "PYTHONUNBUFFERED": "1"}
    if token is not None:
        env["LABEL_STUDIO_API_KEY"] = token
    return {**env, **extra}
