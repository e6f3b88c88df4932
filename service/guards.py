"""ASGI guards in front of the routes: a Host allow-list (DNS rebinding) and JSON-only request bodies (415)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings
from .errors import api_status, error_body

LOOPBACK_BINDS = frozenset({"127.0.0.1", "::1", "localhost"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The Host names requests may carry: ``PROMPTSHRINK_ALLOWED_HOSTS`` if set (``*`` allows any, ``*.example.com``
    a domain and its subdomains); else, bound to loopback, the loopback names only (a web page on a rebound DNS
    name cannot reach the local service); else None: any."""
    if settings.allowed_hosts:
        return None if "*" in settings.allowed_hosts else frozenset(h.lower() for h in settings.allowed_hosts)
    return LOOPBACK_NAMES if settings.host in LOOPBACK_BINDS else None


def host_name(header: str) -> str:
    """The name of a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def host_allowed(name: str, hosts: frozenset[str]) -> bool:
    return name in hosts or any(h.startswith("*.") and (name == h[2:] or name.endswith(h[1:])) for h in hosts)


class GuardMiddleware:
    """Refuse a Host outside the allow-list (400) and a POST body that is not JSON (415), before any route runs."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.hosts is not None:
            name = host_name(headers.get(b"host", b"").decode("latin-1"))
            if not host_allowed(name, self.hosts):
                allowed = ", ".join(sorted(self.hosts))
                message = f"Host {name!r} is not served here (allowed: {allowed})"
                await send_error(send, scope, 400, "host_not_allowed", message)
                return
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        json_body = media == b"application/json" or media.endswith(b"+json")
        if scope["method"] == "POST" and not json_body and (media or has_body):
            message = f"the body must be application/json, not {media.decode('latin-1') or 'untyped'!r}"
            await send_error(send, scope, 415, "unsupported_media_type", message)
            return
        await self.app(scope, receive, send)


async def send_error(send: Send, scope: Scope, status: int, code: str, message: str) -> None:
    """Answer with the JSON error body of the route's API (`service.errors.error_body`), from ASGI middleware."""
    status = api_status(scope.get("path", ""), status)
    body = json.dumps(error_body(scope.get("path", ""), status, code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
