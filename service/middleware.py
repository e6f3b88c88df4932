"""ASGI middleware: a request body size limit (413) and per-route request metrics and logs; access-log scrubbing."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptshrink.depth import JsonDepthScanner, too_deep

from .guards import send_error
from .metrics import Metrics

log = logging.getLogger("promptshrink.service")
QUERY = re.compile(r"\?[^\s\"]*")  # the query of a request line or path, up to the next space or quote


def scrub_query(text: str) -> str:
    """Blank every query value (``/v1/x?api_key=s&jwt=t`` -> ``/v1/x?api_key=***&jwt=***``): a credential can sit
    in any parameter, under any (percent-encoded) name, so none is trusted; names without a value go too."""

    def blank(match: re.Match[str]) -> str:
        parts = re.split(r"([&;])", match.group(0)[1:])
        return "?" + "".join(p if p in "&;" else p.split("=", 1)[0] + "=***" if "=" in p else "***" for p in parts)

    return QUERY.sub(blank, text)


class QueryScrubber(logging.Filter):
    """Blanks every query value in uvicorn's access log lines (see `scrub_query`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(scrub_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def scrub_access_log() -> None:
    """Install `QueryScrubber` on uvicorn's access logger (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QueryScrubber) for f in access.filters):
        access.addFilter(QueryScrubber())


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while reading a chunked body, and JSON
    nested deeper than `promptshrink.depth.MAX_DEPTH` with 422, while reading (before any parser recurses)."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send, scope, *self._too_large())
            return
        seen = 0
        refused = False
        depth = JsonDepthScanner()

        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            body = message.get("body", b"")
            seen += len(body)
            problem = self._too_large() if seen > self.max_bytes else None
            if problem is None and not depth.feed(body):
                problem = (422, "too_deep", str(too_deep("the request body")))
            if problem is not None:  # answer now; the app sees a disconnect
                refused = True
                await self._refuse(send, scope, *problem)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _too_large(self) -> tuple[int, str, str]:
        return 413, "body_too_large", f"request body over {self.max_bytes} bytes"

    async def _refuse(self, send: Send, scope: Scope, status: int, code: str, message: str) -> None:
        self.metrics.errors.labels(code).inc()
        await send_error(send, scope, status, code, message)


class MetricsMiddleware:
    """Count requests and observe latency by route template (so paths never explode the label space)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route: Any = scope.get("route")
            name = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(name, str(status)).inc()
            self.metrics.latency.labels(name).observe(elapsed)
            log.info("%s %s %d %.1fms", scope["method"], name, status, elapsed * 1000)
