"""Ray Serve deployment of the service: the same FastAPI app (`create_app`) on replicas that Ray places, restarts
and autoscales, configured by the same ``PROMPTSHRINK_*`` settings.

    serve run promptshrink.service.ray_app:app [ray_replicas=2 method=tfidf ...]   # or: promptshrink serve --ray

Each replica builds its own app and loads the default method's models before Ray routes traffic to it, so a new
or replaced replica never answers while loading; a replica whose models fail to load fails its start (Ray retries
it and `serve run` reports the error) instead of serving ``/readyz`` 503s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import promptshrink
from promptshrink.errors import InvalidInputError
from promptshrink.model_loading import set_torch_threads

from .app import create_app
from .config import ENV_PREFIX, Settings
from .errors import ApiError
from .metrics import Metrics
from .middleware import BodyLimitMiddleware

log = logging.getLogger("promptshrink.service.ray")
DEPLOYMENT = "promptshrink"
# Requests a replica accepts beyond its compression slots and queue: health, metrics and methods calls.
HEADROOM = 8
# Ray reads this variable when it starts its HTTP proxies: set it where Ray starts (done by `serve --ray`).
PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "promptshrink.service.ray_app:proxy_middlewares"
PROXY_ERRORS = {
    408: ("timeout", "the request timed out in Ray Serve"),
    500: ("replica_failed", "the replica handling this request failed; it is being replaced, retry"),
    503: ("unavailable", "no replica can take this request now; retry"),
}


class ProxyErrorsAsJson:
    """ASGI middleware for Ray's HTTP proxy: its own error answers (a bare 500 when the replica died mid-request,
    text 408/503s) get the service's JSON error body; the app's responses pass unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = replaced = False

        async def relay(message: Message) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                started = True
                headers = dict(message.get("headers", []))
                json_body = headers.get(b"content-type", b"").startswith(b"application/json")
                if message["status"] in PROXY_ERRORS and not json_body:
                    replaced = True
                    await _send_error(send, scope, message["status"], headers.get(b"retry-after"))
                    return
            if not replaced:
                await send(message)

        try:
            await self.app(scope, receive, relay)
        except Exception:
            log.exception("Ray Serve proxy error on %s", scope.get("path"))
        if not started:
            await _send_error(send, scope, 500, None)


async def _send_error(send: Send, scope: Scope, status: int, retry_after: bytes | None) -> None:
    """A JSON error in the shape of the route's API (`service.errors.error_body`)."""
    body = json.dumps(ApiError(status, *PROXY_ERRORS[status]).body(scope.get("path", ""))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Middleware]:
    """Ray Serve HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``): JSON errors from the proxy,
    and the body cap and depth limit enforced in the proxy while it reads the body (by Content-Length up front,
    else by counting a chunked body's bytes as they arrive), so an oversized body is refused there instead of
    being read whole and shipped to a replica that refuses it. The cap is ``PROMPTSHRINK_MAX_BODY_BYTES`` of the
    proxy's environment (`run` exports the settings before Ray starts)."""
    settings = Settings.from_env()
    limit = Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=Metrics())
    return [Middleware(ProxyErrorsAsJson), limit]


@serve.ingress()
class PromptShrinkReplica:
    """One Ray Serve replica running the service app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __serve_build_asgi_app__(self) -> FastAPI:
        """Build the app on the replica; with warm-up on, load the models first (Ray routes only to started ones)."""
        settings = self.settings
        app = create_app(dataclasses.replace(settings, warmup=False))
        if settings.warmup:  # the app's own warm-up, run here instead of in the background
            state = app.state.ps
            methods = sorted(settings.allowed_methods, key=lambda m: (m != settings.method, m))
            state.loaded = {m: asyncio.Event() for m in methods}
            set_torch_threads(settings.compress_threads)
            await state.warm_up()
            if state.ready_error:
                raise RuntimeError(f"warm-up failed: {state.ready_error}")
        return app


def replica_settings(settings: Settings) -> Settings:
    """The settings a replica runs with: at most as many compression threads as CPUs Ray reserves for it."""
    threads = min(settings.compress_threads, max(1, math.ceil(settings.ray_cpus_per_replica)))
    return dataclasses.replace(settings, compress_threads=threads)


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Ray Serve options: resources per replica, then a fixed replica count or autoscaling bounds.

    Autoscaling is on when ``ray_max_replicas`` is set: between ``ray_min_replicas`` (default 1; 0 scales to
    zero) and ``ray_max_replicas``, starting at ``ray_replicas``, aiming at ``ray_target_ongoing_requests``
    requests per replica. A replica accepts its compression slots plus queue (then answers 503 like the plain
    service), so back-pressure stays the app's. A ``cuda`` device needs ``ray_gpus_per_replica`` > 0: Ray then
    gives each replica its share of a GPU, which the replica sees as ``cuda``.
    """
    if settings.ray_cpus_per_replica < 0 or settings.ray_gpus_per_replica < 0:
        raise InvalidInputError("ray_cpus_per_replica and ray_gpus_per_replica must be >= 0")
    device = settings.device or ""
    if device.startswith("cuda") and settings.ray_gpus_per_replica <= 0:
        raise InvalidInputError(
            f"device {device!r} on Ray Serve needs ray_gpus_per_replica > 0 (PROMPTSHRINK_RAY_GPUS_PER_REPLICA, e.g. "
            "0.5 for two replicas a GPU): Ray places replicas on GPUs by it"
        )
    if device.startswith("cuda:"):
        raise InvalidInputError(f"device {device!r}: Ray picks each replica's GPU, use 'cuda'")
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": {"num_cpus": settings.ray_cpus_per_replica, "num_gpus": settings.ray_gpus_per_replica},
        "max_ongoing_requests": settings.compress_threads + settings.max_queue + HEADROOM,
        "graceful_shutdown_timeout_s": settings.request_timeout_s,
    }
    if settings.ray_max_replicas is None:
        if settings.ray_replicas < 1:
            raise InvalidInputError(f"ray_replicas must be >= 1, got {settings.ray_replicas}")
        options["num_replicas"] = settings.ray_replicas
        return options
    low = 1 if settings.ray_min_replicas is None else settings.ray_min_replicas
    high = settings.ray_max_replicas
    if not 0 <= low <= high or high < 1:
        raise InvalidInputError(f"need 0 <= ray_min_replicas ({low}) <= ray_max_replicas ({high}) and max >= 1")
    if settings.ray_target_ongoing_requests <= 0:
        raise InvalidInputError("ray_target_ongoing_requests must be > 0")
    options["autoscaling_config"] = {
        "min_replicas": low,
        "max_replicas": high,
        "initial_replicas": min(max(settings.ray_replicas, low), high),
        "target_ongoing_requests": settings.ray_target_ongoing_requests,
    }
    return options


def build(settings: Settings) -> Application:
    """The Serve application for ``settings`` (checked here, on the driver, before any replica starts)."""
    promptshrink.registry.get_method(settings.method)
    settings = replica_settings(settings)
    return serve.deployment(PromptShrinkReplica).options(**deployment_options(settings)).bind(settings)


def settings_from_args(args: dict[str, str]) -> Settings:
    """``PROMPTSHRINK_*`` settings, each ``key=value`` argument overriding the setting ``key`` (as
    ``PROMPTSHRINK_<KEY>`` would)."""
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InvalidInputError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return Settings.from_env({**os.environ, **{ENV_PREFIX + key.upper(): str(value) for key, value in args.items()}})


def app(args: dict[str, str]) -> Application:
    """Application builder for `serve run promptshrink.service.ray_app:app [key=value ...]` (e.g. ray_replicas=2)."""
    return build(settings_from_args(args))


def run(settings: Settings) -> None:
    """`promptshrink serve --ray`: start Ray (or join ``ray_address``), serve at host:port until interrupted."""
    import ray

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = build(settings)
    os.environ.setdefault(PROXY_CALLBACK_VARIABLE, PROXY_CALLBACK)  # reaches the proxies of a Ray started here
    os.environ.update(settings.to_env())  # and so do the settings (the proxy's body cap)
    ray.init(address=settings.ray_address)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(application, name=DEPLOYMENT, route_prefix="/", blocking=True)
