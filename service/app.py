"""The FastAPI application: compression endpoints, the OpenAI-compatible proxy, health and metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from functools import partial

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import promptshrink
from promptshrink.errors import PromptShrinkError
from promptshrink.model_loading import set_torch_threads
from promptshrink.target_tokenizer import bundled_encoding_names

from .batching import MicroBatcher
from .config import Settings
from .errors import ApiError, from_library
from .gateway import add_gateway_routes
from .guards import GuardMiddleware, allowed_hosts
from .limits import WorkPool
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, MetricsMiddleware, scrub_access_log
from .policy import RESPONSE_HEADERS, GatewayMetrics, check_route_policies
from .proxy import RELAYED_HEADERS, Upstream, check_upstream_key
from .routes_compress import router as compress_router
from .routes_meta import docs as docs_router
from .routes_meta import health as health_router
from .routes_meta import methods as methods_router
from .routes_meta import metrics as metrics_router
from .routes_proxy import router as proxy_router

log = logging.getLogger("promptshrink.service")
WARMUP_TEXT = "Prompt compression keeps the informative parts of a prompt. The rest is dropped to save tokens."
WARMUP_QUESTION = "What does prompt compression keep?"
LOADING_RETRY_AFTER_S = 5  # a model load takes seconds: a sooner retry would only meet another 503


@dataclass
class State:
    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    ready: threading.Event = field(default_factory=threading.Event)
    ready_error: str | None = None
    pool: WorkPool | None = None
    batcher: MicroBatcher | None = None
    upstream: Upstream | None = None
    loaded: dict[str, asyncio.Event] = field(default_factory=dict)  # per allowed method, set once warmed up
    gauges: GatewayMetrics = field(init=False)  # the proxy routes' own metrics (fail-open, per route and model)

    def __post_init__(self) -> None:
        self.gauges = GatewayMetrics(self.metrics)

    async def warm_up(self) -> None:
        """Load the models of every allowed method (the default first) by compressing a short text, also with a
        question when the method reads one, and then passages with the question (`auto` picks another method for
        each of those shapes), one method at a time on a worker thread, then (with an upstream) the bundled
        tokenizers; /readyz reports the outcome."""
        methods = list(self.loaded)
        for method in methods:
            options = {**self.settings.method_options(method), "rate": 0.5, "device": self.settings.device}
            calls = [partial(promptshrink.compress, WARMUP_TEXT, method, **options)]
            if promptshrink.registry.get_method(method).uses_question:
                calls.append(partial(promptshrink.compress, WARMUP_TEXT, method, question=WARMUP_QUESTION, **options))
                passages = [WARMUP_TEXT, WARMUP_QUESTION.replace("?", ".")]
                calls.append(partial(promptshrink.compress_passages, passages, WARMUP_QUESTION, method, **options))
            try:
                for call in calls:
                    await asyncio.to_thread(call)
            except Exception as exc:  # any failure must show on /readyz, not kill the task silently
                self.ready_error = f"{method}: {type(exc).__name__}: {exc}"
                log.error("warm-up of %s failed: %s", method, self.ready_error)
            finally:
                self.loaded[method].set()  # a failed load: requests get the library's own error
        # the proxy counts in the request model's encoding: a cold load takes 0.05-0.25 s, the fail-open budget
        for name in bundled_encoding_names() if self.settings.upstream_base_url else []:
            try:
                await asyncio.to_thread(promptshrink.get_tokenizer, name)
            except Exception as exc:
                self.ready_error = f"tokenizer {name}: {type(exc).__name__}: {exc}"
                log.error("warm-up of the %s tokenizer failed: %s", name, exc)
        if self.ready_error is None:
            self.ready.set()
            self.metrics.ready.set(1)
            log.info("warm-up of %s done: ready", ", ".join(methods))

    async def wait_loaded(self, method: str) -> None:
        """Wait (at most ``load_wait_s``) for ``method``'s warm-up; still loading: 503 with Retry-After."""
        event = self.loaded.get(method)
        if event is None or event.is_set():
            return
        try:
            await asyncio.wait_for(event.wait(), self.settings.load_wait_s)
        except TimeoutError:
            retry = max(self.settings.retry_after_s, LOADING_RETRY_AFTER_S)
            raise ApiError(
                503,
                "model_loading",
                f"the models of {method!r} are still loading; retry after {retry}s",
                headers={"Retry-After": str(retry)},
            ) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` default to the environment."""
    settings = settings or Settings.from_env()
    for method in sorted(settings.allowed_methods):  # fail fast on a bad method name
        promptshrink.registry.get_method(method)
    for what, method in (("method", settings.method), ("proxy method", settings.effective_proxy_method)):
        if method not in settings.allowed_methods:
            allowed = ", ".join(sorted(settings.methods))
            raise ValueError(f"the {what} {method!r} is not in PROMPTSHRINK_METHODS ({allowed})")
    method_fields = {f.name for f in fields(promptshrink.registry.get_method(settings.method))}
    if settings.model and "model" not in method_fields:
        raise ValueError(
            f"PROMPTSHRINK_MODEL (--model) sets the default method's model, and {settings.method!r} takes none; "
            "pick an LM method with PROMPTSHRINK_METHOD (--method), e.g. selective_context"
        )
    check_upstream_key(settings)
    check_route_policies(settings)
    scrub_access_log()
    state = State(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        set_torch_threads(settings.compress_threads)
        state.pool = WorkPool(settings.compress_threads, settings.max_queue)
        if settings.batch_wait_ms > 0:
            state.batcher = MicroBatcher(settings, state.metrics, lambda: state.pool)
        state.metrics.busy_slots.set_function(lambda: state.pool.slots.used if state.pool else 0)
        state.upstream = Upstream(settings, state.metrics)
        warm_up = None
        if settings.warmup:
            methods = sorted(settings.allowed_methods, key=lambda m: (m != settings.method, m))
            state.loaded = {m: asyncio.Event() for m in methods}
            warm_up = asyncio.create_task(state.warm_up())
        else:
            state.ready.set()
        yield
        if warm_up is not None:
            warm_up.cancel()
        await state.upstream.aclose()
        state.pool.shutdown()

    app = FastAPI(
        title="promptshrink",
        version=promptshrink.__version__,
        description="Prompt compression as a service, and an OpenAI-compatible proxy that compresses prompts.",
        lifespan=lifespan,
        openapi_url=None,  # served by routes below, behind the service key unless public_docs
        docs_url=None,
        redoc_url=None,
    )
    app.state.ps = state
    _install_errors(app, state)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=state.metrics)
    app.add_middleware(GuardMiddleware, hosts=allowed_hosts(settings))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],  # DELETE: /v1/responses/{id}
            allow_headers=["*"],
            expose_headers=[*RESPONSE_HEADERS, *RELAYED_HEADERS],
        )
    _add_routes(app, settings)
    add_gateway_routes(app, state, caller_upstream_key, key_matches)
    return app


def key_matches(candidate: str | None, keys: frozenset[str]) -> bool:
    """Whether ``candidate`` is one of ``keys``, compared in constant time against every key."""
    if candidate is None:
        return False
    given = candidate.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


async def caller_upstream_key(request: Request) -> str | None:
    """Check the service key (when keys are set); return the upstream key to forward for this caller.

    That is the caller's own bearer key if it sent one (not a service key), else the server's upstream key, but
    the server's key only for callers authenticated with a service key (or with the explicit anonymous opt-in).
    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency on its thread pool, a thread
    hop per request.
    """
    settings = request.app.state.ps.settings
    keys = settings.api_keys
    auth = request.headers.get("authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    x_key = request.headers.get("x-api-key")
    if not keys:
        return bearer or (settings.upstream_api_key if settings.allow_anonymous_upstream_key else None)
    bearer_is_service_key = key_matches(bearer, keys)
    if bearer_is_service_key or key_matches(x_key, keys):  # a service key is never forwarded upstream
        return settings.upstream_api_key if bearer_is_service_key or not bearer else bearer
    raise ApiError(
        401,
        "unauthorized",
        "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def authenticate(request: Request) -> None:
    """The key check of the compression, proxy and methods routes; keeps the caller's upstream key for the proxy."""
    request.state.upstream_key = await caller_upstream_key(request)


def key_unless(public: bool) -> Callable[[Request], Awaitable[None]]:
    """For /metrics and the docs: a service key unless keys are off or the endpoint is made public."""

    async def check(request: Request) -> None:
        if not public and request.app.state.ps.settings.api_keys:
            await caller_upstream_key(request)

    return check


def _add_routes(app: FastAPI, settings: Settings) -> None:
    keyed = [Depends(authenticate)]
    app.include_router(compress_router, dependencies=keyed)
    app.include_router(proxy_router, dependencies=keyed)
    app.include_router(methods_router, dependencies=keyed)
    app.include_router(health_router)
    app.include_router(metrics_router, dependencies=[Depends(key_unless(settings.public_metrics))])
    app.include_router(docs_router, dependencies=[Depends(key_unless(settings.public_docs))])


def _install_errors(app: FastAPI, state: State) -> None:
    def respond(request: Request, err: ApiError) -> JSONResponse:
        state.metrics.errors.labels(err.code).inc()
        path = request.url.path
        return JSONResponse(err.body(path), err.status_at(path), headers=err.headers)

    @app.exception_handler(ApiError)
    async def service_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc)

    @app.exception_handler(PromptShrinkError)
    async def library_error(request: Request, exc: PromptShrinkError) -> JSONResponse:
        return respond(request, from_library(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            err = ApiError(400, "malformed_json", "the request body is not valid JSON", errors=errors)
            return respond(request, err)
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        where = [str(p) for p in errors[0]["loc"] if p != "body"] if errors else []
        param = ".".join(where) or None  # OpenAI's error shape names the field (service.errors.error_body)
        return respond(request, ApiError(422, "invalid_request", summary, errors=errors, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return respond(request, ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return respond(request, ApiError(500, "internal_error", "internal error; the server log has the details"))
