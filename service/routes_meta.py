"""Discovery and operations endpoints: ``/v1/methods``, ``/healthz``, ``/readyz``, ``/metrics`` and the docs.

Each group is its own router, so `service.app` puts each behind the key check it needs (methods: the service key;
metrics and docs: the service key unless made public; health: none).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import promptshrink
from promptshrink.segmentation import LEVELS

from .config import Settings
from .schemas import Health, MethodsResponse

methods = APIRouter()
health = APIRouter()
metrics = APIRouter()
docs = APIRouter()


@methods.get("/v1/methods", response_model=MethodsResponse)
async def list_methods(request: Request) -> dict[str, Any]:
    """The compression methods, their parameters, and the options this server lets requests set."""
    settings = request.app.state.ps.settings
    described = promptshrink.describe_methods()
    for m in described:
        m["parameters"] = [{**p, "default": _plain(p["default"])} for p in m["parameters"]]
    return {
        "default": settings.method,
        "methods": described,
        "allowed_methods": sorted(settings.allowed_methods),
        "allowed_options": sorted(settings.allowed_options),
    }


@health.get("/healthz", response_model=Health)
async def healthz(request: Request) -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok", "method": request.app.state.ps.settings.method}


@health.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> Response:
    """Readiness: the models of every allowed method are loaded (503 until then, or with the load error)."""
    state = request.app.state.ps
    method = state.settings.method
    loaded = sorted(m for m, event in state.loaded.items() if event.is_set())
    if state.ready.is_set():
        return JSONResponse({"status": "ready", "method": method, "loaded": loaded})
    status = "failed" if state.ready_error else "loading"
    return JSONResponse({"status": status, "method": method, "detail": state.ready_error, "loaded": loaded}, 503)


@metrics.get("/metrics", response_class=Response)
async def prometheus(request: Request) -> Response:
    """Prometheus metrics: requests, latency histograms, tokens in/out, errors by code (needs a service key
    when keys are set, unless PROMPTSHRINK_PUBLIC_METRICS=1)."""
    return Response(generate_latest(request.app.state.ps.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@docs.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(this_server(request.app.openapi(), request.app.state.ps.settings))


@docs.get("/docs", include_in_schema=False)
async def swagger() -> Response:
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
