"""Slow senders are dropped: uvicorn's HTTP protocols with a header and a body read timeout.

uvicorn closes a keep-alive connection idle between requests (``timeout_keep_alive``) but has no limit on how long
a client may take to send a request: a connection that never sends, or sends one header byte every few seconds,
or a body at a trickle, holds a socket and a request task forever. Here the request headers must be complete
``header_timeout_s`` after the connection opens or the next request starts, and the whole body must arrive within
``body_timeout_s`` after its headers; otherwise the client gets a 408 (when no response has started) and the
connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import Settings

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional (uvicorn[standard]); uvicorn then uses h11
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
)


class ReadTimeouts:
    """Mixin over a uvicorn HTTP protocol; the class attributes are set by `configure` from the settings."""

    header_timeout_s: float = Settings.header_timeout_s
    body_timeout_s: float = Settings.body_timeout_s
    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._seen_cycle: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.header_timeout_s, "headers")  # a connection that never sends is dropped too

    def data_received(self, data: bytes) -> None:
        if self._timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(self.header_timeout_s, "headers")  # the first bytes of the next request
        super().data_received(data)  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:  # this request's headers are complete
            self._seen_cycle = cycle
            self._disarm()
            if cycle.more_body:
                self._arm(self.body_timeout_s, "body")
        elif cycle is not None and not cycle.more_body and self._timer is not None:
            self._disarm()  # the body is complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, what: str) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if what == "body" else None
        if cycle is None or not cycle.response_started:
            limit = self.header_timeout_s if what == "headers" else self.body_timeout_s
            body = b'{"error": {"code": "request_timeout", "message": "the request %s did not arrive within %gs"}}'
            body %= (what.encode(), limit)
            self.transport.write(TIMEOUT_RESPONSE % len(body) + body)
        if cycle is not None:  # the app waiting for the body sees a disconnect; its response goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class H11ReadTimeouts(ReadTimeouts, H11Protocol):
    """uvicorn's h11 protocol with read timeouts."""


PROTOCOLS: list[type] = [H11ReadTimeouts]
if HttpToolsProtocol is not None:

    class HttpToolsReadTimeouts(ReadTimeouts, HttpToolsProtocol):
        """uvicorn's httptools protocol with read timeouts."""

    PROTOCOLS.append(HttpToolsReadTimeouts)


def configure(settings: Settings) -> str:
    """Set the timeouts from ``settings`` (per process: worker processes call it too); returns the protocol's import
    path for ``uvicorn.Config(http=...)``: httptools when installed (as uvicorn's own ``auto``), else h11."""
    for cls in PROTOCOLS:
        cls.header_timeout_s, cls.body_timeout_s = settings.header_timeout_s, settings.body_timeout_s
    return f"{__name__}:{PROTOCOLS[-1].__name__}"


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The `uvicorn.Config` keyword arguments for the connection limits of ``settings``."""
    return {"http": configure(settings), "timeout_keep_alive": settings.keep_alive_s}
