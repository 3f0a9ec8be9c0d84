"""How `lsal serve` runs uvicorn: with the limits a production ASGI service sets.

Uvicorn closes idle keep-alive connections but lets a client take forever to send a request's head: one byte
every few seconds keeps a connection (and a file descriptor) forever. `BoundedH11Protocol` closes a
connection whose next request head is not complete within `head_timeout_s`; request bodies are bounded in
time and size by the app (backend.protocol), connections in number by `limit_concurrency`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head does not arrive in time."""

    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        """Close the connection unless a new request head has been parsed `head_timeout_s` from now."""
        waiting_for = self.cycle  # a new request replaces the cycle
        previous = getattr(self, "_head_timer", None)
        if previous is not None:
            previous.cancel()

        def expire() -> None:
            if self.cycle is waiting_for and not self.transport.is_closing():
                self.transport.close()

        self._head_timer = self.loop.call_later(self.head_timeout_s, expire)


def serve_options(settings: Any) -> dict[str, Any]:
    """uvicorn.run / uvicorn.Config keyword arguments for the backend's limits (from Settings)."""
    protocol = type("BoundedH11", (BoundedH11Protocol,), {"head_timeout_s": settings.head_timeout_s})
    return {"http": protocol, "limit_concurrency": settings.max_connections,
            "timeout_keep_alive": settings.keep_alive_s, "h11_max_incomplete_event_size": 64 * 1024,
            "backlog": 256}
