"""Health check of an `lsal worker` container: Redis answers, and an RQ worker of this container is registered.

RQ registers every worker with its host name (inside Docker: the container's) and its pid, and lets the
registration expire when heartbeats stop; a SimpleWorker busy with a long job extends it to the job's
timeout first. So "registered under this host name, with a pid that is alive here" means a worker of this
container is working the queue. A worker still importing torch has not registered yet: the image's
HEALTHCHECK gives it a start period.

Deliberately light (redis and rq only, not the project, which imports torch): it runs every 30 seconds.
Exit status 0 = healthy, 1 = unhealthy, as Docker expects.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def redis_url(env: Mapping[str, str] = os.environ) -> str:
    """REDIS_URL, else LSAL_REDIS_URL, else the default: the same as core.config.Settings.redis_url."""
    lowered = {k.lower(): v for k, v in env.items()}  # pydantic-settings reads names case-insensitively
    for name in ("redis_url", "lsal_redis_url"):
        if name in lowered:
            return lowered[name]
    return DEFAULT_REDIS_URL


def check(url: str, hostname: str | None = None) -> tuple[bool, str]:
    """(healthy, one line saying why)."""
    from redis import Redis
    from redis.exceptions import RedisError
    from rq import Worker

    hostname = hostname or socket.gethostname()
    try:
        with Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5) as connection:
            connection.ping()
            workers = Worker.all(connection=connection)
    except (RedisError, OSError, ValueError) as exc:  # the URL itself is not printed: it may hold a password
        return False, f"Redis at REDIS_URL does not answer: {type(exc).__name__}: {exc}"
    mine = [w for w in workers if w.hostname == hostname and w.pid and os.path.exists(f"/proc/{w.pid}")]
    if not mine:
        return False, f"no live RQ worker of host {hostname!r} is registered ({len(workers)} on other hosts)"
    return True, "; ".join(f"{w.name}: {w.get_state()} on {', '.join(w.queue_names())}" for w in mine)


def main() -> int:
    healthy, detail = check(redis_url())
    print(("healthy: " if healthy else "unhealthy: ") + detail)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
