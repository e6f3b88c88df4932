"""The FastAPI application: compression endpoints, the OpenAI-compatible proxy, health and metrics."""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import promptshrink
from promptshrink.errors import PromptShrinkError
from promptshrink.model_loading import set_torch_threads
from promptshrink.segmentation import LEVELS

from .batching import MicroBatcher, batchable
from .compression import check_options, check_unicode_body, is_light, run_compress, runs_inline
from .config import Settings
from .deadlines import Callers, unless_disconnected
from .errors import ApiError, busy, from_library
from .gateway import add_gateway_routes
from .guards import GuardMiddleware, allowed_hosts
from .limits import WorkPool
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, MetricsMiddleware, scrub_access_log
from .proxy import Upstream, check_upstream_key, compress_body, policy_from
from .proxy_schemas import ChatCompletionsBody, CompletionsBody
from .schemas import BatchRequest, BatchResponse, CompressRequest, CompressResponse, ErrorBody, Health, MethodsResponse

log = logging.getLogger("promptshrink.service")
WARMUP_TEXT = "Prompt compression keeps the informative parts of a prompt. The rest is dropped to save tokens."
WARMUP_QUESTION = "What does prompt compression keep?"
LOADING_RETRY_AFTER_S = 5  # a model load takes seconds: a sooner retry would only meet another 503
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 413, 422, 503, 504)}
T = TypeVar("T")
PROXY_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 502: {"model": ErrorBody}}


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

    async def warm_up(self) -> None:
        """Load the models of every allowed method (the default first) by compressing a short text, also with a
        question when the method reads one (`auto` picks another method then), one method at a time on a worker
        thread; /readyz reports the outcome."""
        methods = list(self.loaded)
        for method in methods:
            options = self.settings.method_options(method)
            questions = [None, WARMUP_QUESTION] if promptshrink.registry.get_method(method).uses_question else [None]
            try:
                for question in questions:
                    await asyncio.to_thread(
                        promptshrink.compress,
                        WARMUP_TEXT,
                        method,
                        rate=0.5,
                        question=question,
                        device=self.settings.device,
                        **options,
                    )
            except Exception as exc:  # any failure must show on /readyz, not kill the task silently
                self.ready_error = f"{method}: {type(exc).__name__}: {exc}"
                log.error("warm-up of %s failed: %s", method, self.ready_error)
            finally:
                self.loaded[method].set()  # a failed load: requests get the library's own error
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
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[
                "x-promptshrink-tokens-saved",
                "x-promptshrink-original-tokens",
                "x-promptshrink-compressed-tokens",
            ],
        )
    _add_routes(app, state)
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


async def service_key(request: Request, public: bool) -> None:
    """For /metrics and the docs: a service key unless keys are off or the endpoint is made public."""
    if not public and request.app.state.ps.settings.api_keys:
        await caller_upstream_key(request)


Auth = Annotated[str | None, Depends(caller_upstream_key)]


def _add_routes(app: FastAPI, state: State) -> None:
    settings, metrics = state.settings, state.metrics

    async def compress_one(req: CompressRequest, request: Request) -> dict[str, Any]:
        queued_at = time.perf_counter()
        method, options = check_options(req, settings)
        await state.wait_loaded(method)
        assert state.pool is not None
        lease = state.pool.lease(1)  # admission is the same for inline and pooled work
        if lease is None:
            raise busy(settings.retry_after_s, "the compression queue")
        if runs_inline(req, method):
            with closing(lease):
                return run_compress(req, settings, metrics, queued_at, queued_at + settings.request_timeout_s)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("compress request: %s", req.model_dump_json()[:2000])
        try:
            if state.batcher is not None and batchable(req, method):
                batched = state.batcher.respond(req, method, options, lease, queued_at)
                return await unless_disconnected(request, batched, settings.request_timeout_s)
            waiting = asyncio.get_running_loop().create_future()  # cancelled when this caller goes
            deadline = queued_at + settings.request_timeout_s
            job = partial(run_compress, req, settings, metrics, queued_at, deadline, Callers([waiting]).progress)
            work = state.pool.run(lease, job, light=is_light(method))
            return await unless_disconnected(request, _tied(work, waiting), settings.request_timeout_s)
        except TimeoutError as exc:
            raise _timeout() from exc
        finally:
            lease.close()

    @app.post("/v1/compress", response_model=CompressResponse, response_model_exclude_none=True, responses=ERRORS)
    async def compress(req: CompressRequest, request: Request, _: Auth) -> dict[str, Any]:
        """Compress a text, a list of chat messages, or passages for a question."""
        return await compress_one(req, request)

    @app.post("/v1/compress/batch", response_model=BatchResponse, response_model_exclude_none=True, responses=ERRORS)
    async def compress_batch(batch: BatchRequest, _: Auth) -> dict[str, Any]:
        """Compress many items concurrently (bounded); each item reports its own result or error."""
        start = time.perf_counter()
        if len(batch.items) > settings.max_batch_items:
            raise ApiError(413, "too_many_items", f"{len(batch.items)} items; at most {settings.max_batch_items}")
        assert state.pool is not None
        width = min(len(batch.items), batch.concurrency or state.pool.threads, state.pool.threads)
        lease = state.pool.lease(width)
        if lease is None:
            raise busy(settings.retry_after_s, "the compression queue")
        gate = asyncio.Semaphore(width)

        async def one(req: CompressRequest) -> dict[str, Any]:
            async with gate:
                try:
                    method, _ = check_options(req, settings)
                    await state.wait_loaded(method)
                    deadline = start + settings.request_timeout_s
                    job = partial(run_compress, req, settings, metrics, time.perf_counter(), deadline)
                    done = await state.pool.run(lease, job, light=is_light(method))  # type: ignore[union-attr]
                    return {"ok": True, "result": done}
                except (ApiError, PromptShrinkError) as exc:
                    err = exc if isinstance(exc, ApiError) else from_library(exc)
                    metrics.errors.labels(err.code).inc()
                    return {"ok": False, "status": err.status, "error": err.body()["error"]}

        try:
            items = await asyncio.wait_for(asyncio.gather(*(one(r) for r in batch.items)), settings.request_timeout_s)
        except TimeoutError as exc:
            raise _timeout() from exc
        finally:
            lease.close()
        return {"items": items, "elapsed_s": time.perf_counter() - start}

    async def proxied(path: str, request: Request, body: dict[str, Any], upstream_key: str | None) -> Response:
        assert state.pool is not None and state.upstream is not None
        check_unicode_body(body)
        policy = policy_from(body, request.headers, settings)
        headers: dict[str, str] = {}
        if policy.enabled:
            method, options = check_options(policy, settings)
            await state.wait_loaded(method)
            lease = state.pool.lease(1)
            if lease is None:
                raise busy(settings.retry_after_s, "the compression queue")
            try:
                started = time.perf_counter()
                limited = {**options, "timeout_s": settings.request_timeout_s}  # stops, freeing the thread, on 504
                job = partial(compress_body, path, body, policy, method, limited)
                work = state.pool.run(lease, job, light=is_light(method))
                before, after = await asyncio.wait_for(work, settings.request_timeout_s)
            except TimeoutError as exc:
                raise _timeout() from exc
            finally:
                lease.close()
            metrics.record_compression(method, time.perf_counter() - started, before, after)
            headers = {
                "x-promptshrink-method": method,
                "x-promptshrink-original-tokens": str(before),
                "x-promptshrink-compressed-tokens": str(after),
                "x-promptshrink-tokens-saved": str(before - after),
            }
        upstream = await state.upstream.open(path, body, state.upstream.headers(request.headers, upstream_key))
        return await state.upstream.respond(upstream, bool(body.get("stream")), headers)

    @app.post("/v1/chat/completions", responses=PROXY_ERRORS)
    async def chat_completions(request: Request, _: ChatCompletionsBody, key: Auth) -> Response:
        """OpenAI-compatible: compress the messages, forward upstream, relay the answer (streams unchanged)."""
        return await proxied("chat/completions", request, await request.json(), key)

    @app.post("/v1/completions", responses=PROXY_ERRORS)
    async def completions(request: Request, _: CompletionsBody, key: Auth) -> Response:
        """OpenAI-compatible legacy completions: compress the prompt, forward upstream, relay the answer."""
        return await proxied("completions", request, await request.json(), key)

    @app.get("/v1/methods", response_model=MethodsResponse)
    async def methods(_: Auth) -> dict[str, Any]:
        """The compression methods, their parameters, and the options this server lets requests set."""
        described = promptshrink.describe_methods()
        for m in described:
            m["parameters"] = [{**p, "default": _plain(p["default"])} for p in m["parameters"]]
        return {
            "default": settings.method,
            "methods": described,
            "allowed_methods": sorted(settings.allowed_methods),
            "allowed_options": sorted(settings.allowed_options),
        }

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok", "method": settings.method}

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz() -> Response:
        """Readiness: the models of every allowed method are loaded (503 until then, or with the load error)."""
        loaded = sorted(m for m, event in state.loaded.items() if event.is_set())
        if state.ready.is_set():
            return JSONResponse({"status": "ready", "method": settings.method, "loaded": loaded})
        status = "failed" if state.ready_error else "loading"
        body = {"status": status, "method": settings.method, "detail": state.ready_error, "loaded": loaded}
        return JSONResponse(body, 503)

    @app.get("/metrics", response_class=Response)
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics: requests, latency histograms, tokens in/out, errors by code (needs a service key
        when keys are set, unless PROMPTSHRINK_PUBLIC_METRICS=1)."""
        await service_key(request, settings.public_metrics)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await service_key(request, settings.public_docs)
        return JSONResponse(this_server(app.openapi(), settings))

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        await service_key(request, settings.public_docs)
        return get_swagger_ui_html(openapi_url="/openapi.json", title="promptshrink")


def this_server(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The OpenAPI schema narrowed to this server: ``method`` lists the allowed methods and ``options`` the
    allowed option names, so generated clients and schema-based fuzzers send what the server accepts."""
    schema = copy.deepcopy(schema)
    known = {"unit": {"enum": list(LEVELS)}}
    options = {"type": "object", "properties": {o: known.get(o, {}) for o in sorted(settings.allowed_options)}}
    options["additionalProperties"] = False
    for model in schema.get("components", {}).get("schemas", {}).values():
        props = model.get("properties", {})
        if "method" in props and "options" in props:
            props["method"]["anyOf"] = [{"enum": sorted(settings.allowed_methods)}, {"type": "null"}]
            props["options"] = {**props["options"], **options}
    return schema


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


async def _tied(work: Awaitable[T], waiting: asyncio.Future[None]) -> T:
    """``work``'s result; ``waiting`` is cancelled when this coroutine ends, however it ends (the job's `Callers`
    then see that its caller has gone)."""
    try:
        return await work
    finally:
        waiting.cancel()


def _timeout() -> ApiError:
    return ApiError(504, "timeout", "compression took longer than the server's request timeout")


def _install_errors(app: FastAPI, state: State) -> None:
    def respond(err: ApiError) -> JSONResponse:
        state.metrics.errors.labels(err.code).inc()
        return JSONResponse(err.body(), err.status, headers=err.headers)

    @app.exception_handler(ApiError)
    async def service_error(_: Request, exc: ApiError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(PromptShrinkError)
    async def library_error(_: Request, exc: PromptShrinkError) -> JSONResponse:
        return respond(from_library(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return respond(ApiError(400, "malformed_json", "the request body is not valid JSON", errors=errors))
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        return respond(ApiError(422, "invalid_request", summary, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return respond(ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return respond(ApiError(500, "internal_error", "internal error; the server log has the details"))
