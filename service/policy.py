"""The policy of every compressing proxy route (OpenAI chat and completions, Anthropic Messages, OpenAI
Responses): what to compress, and fail-open.

On top of `ProxyPolicy` (method, budget, roles, ``min_tokens``...) a request or a route chooses the part types to
compress, the size of a tool output worth compressing, Kong-style token-count ``ranges`` with their rate, the
age ``schedule`` of long histories, and a latency budget: compression that errs or takes longer than
``budget_ms`` forwards the original body (fail-open, counted in ``/metrics`` and named in the
``x-promptshrink-fail-open`` response header), or answers 5xx with ``stop_on_error``.

Sources, later ones winning: server defaults, the route's entry in ``PROMPTSHRINK_PROXY_POLICIES`` (JSON keyed by
route, e.g. ``{"/v1/messages": {"parts": ["tool_result"]}}``), the ``x-promptshrink-policy`` header (JSON), the
``x-promptshrink-budget-ms`` / ``x-promptshrink-stop-on-error`` headers, the ``promptshrink`` body field.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from promptshrink.errors import PromptShrinkError
from promptshrink.formats import DEFAULT_SCHEDULE, TOOL_MIN_CHARS
from promptshrink.request import CompressOptions

from .compression import is_light
from .compression import library_options as admit_options
from .config import Settings
from .errors import ApiError, from_library
from .metrics import LATENCY_BUCKETS, Metrics
from .proxy import HEADER_PREFIX, POLICY_FIELD, ProxyPolicy, policy_from

# Measured with benchmarks/proxy_overhead.py (docs/proxy.md): tfidf on a 9.9 KB tool output takes 8 ms at p50
# on 2 cores (33 ms with the cores shared); 200 ms fails open only on a stuck or overloaded pool.
DEFAULT_BUDGET_MS = 200.0
MAX_MODEL_LABELS = 64
FAIL_OPEN_HEADER = HEADER_PREFIX + "fail-open"
# The headers a compressed answer carries (also what CORS exposes to browsers: service/app.py).
RESULT_HEADERS = tuple(
    HEADER_PREFIX + name
    for name in ("method", "original-tokens", "compressed-tokens", "tokens-saved", "compression-ms")
)
RESPONSE_HEADERS = (*RESULT_HEADERS, FAIL_OPEN_HEADER)


class Range(BaseModel):
    """Pieces with ``min_tokens <= tokens < max_tokens`` keep ``rate`` of their tokens."""

    model_config = ConfigDict(extra="forbid")
    min_tokens: int = Field(0, ge=0)
    max_tokens: int = Field(1 << 30, gt=0)
    rate: float = Field(gt=0, le=1)


class GatewayOptions(BaseModel):
    """The gateway's own policy fields (the rest of the body field is a `ProxyPolicy`)."""

    model_config = ConfigDict(extra="forbid")
    parts: list[str] | None = Field(None, description="text, tool, tool_result, function_call_output; None: all")
    tool_min_chars: int = Field(TOOL_MIN_CHARS, ge=0)
    ranges: list[Range] | None = None
    schedule: list[tuple[int, float]] = Field(default_factory=lambda: list(DEFAULT_SCHEDULE))
    budget_ms: float = Field(DEFAULT_BUDGET_MS, gt=0)
    stop_on_error: bool = False

    def range_tuples(self) -> list[tuple[int, int, float]] | None:
        """``ranges`` as the library takes them: ``(min_tokens, max_tokens, rate)``."""
        return None if self.ranges is None else [(r.min_tokens, r.max_tokens, r.rate) for r in self.ranges]

    def conversation_options(self) -> dict[str, Any]:
        """The `promptshrink.formats.compress_conversation` arguments of this policy."""
        schedule = [tuple(s) for s in self.schedule]
        return {"parts": self.parts, "tool_min_chars": self.tool_min_chars, "schedule": schedule,
                "ranges": self.range_tuples()}  # fmt: skip

    @model_validator(mode="after")
    def _check(self) -> GatewayOptions:
        if any(not 0 < f <= 1 or a < 0 for a, f in self.schedule):
            raise ValueError("schedule steps are (age_from >= 0, factor in (0, 1])")
        return self


def _json_object(raw: str | None, where: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ApiError(422, "invalid_input", f"{where} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_input", f"{where} must be a JSON object")
    return value


POLICY_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/messages", "/v1/responses")


def check_route_policies(settings: Settings) -> None:
    """Refuse a bad ``PROMPTSHRINK_PROXY_POLICIES`` at start-up (ValueError naming the route and the problem),
    rather than with a 422 on every proxied request: a JSON object keyed by `POLICY_ROUTES`, each entry a policy
    that validates."""
    try:
        routes = _json_object(settings.proxy_policies, "PROMPTSHRINK_PROXY_POLICIES")
        for route in routes:
            if route not in POLICY_ROUTES:
                raise ApiError(422, "invalid_input", f"unknown route {route!r} (routes: {', '.join(POLICY_ROUTES)})")
            gateway_policy(route, {}, {}, settings)
    except ApiError as exc:
        where = "" if exc.message.startswith("PROMPTSHRINK") else "PROMPTSHRINK_PROXY_POLICIES: "
        raise ValueError(where + exc.message) from exc


def gateway_policy(
    route: str, body: dict[str, Any], headers: Mapping[str, str], settings: Settings
) -> tuple[ProxyPolicy, GatewayOptions]:
    """The request's policy for ``route``; removes the ``promptshrink`` field from ``body``."""
    route_policy = _json_object(settings.proxy_policies, "PROMPTSHRINK_PROXY_POLICIES").get(route) or {}
    if not isinstance(route_policy, dict):
        raise ApiError(422, "invalid_input", f"the PROMPTSHRINK_PROXY_POLICIES entry of {route} is not an object")
    given_headers = {
        "enabled" if name == "compress" else name.replace("-", "_")
        for name in ("method", "rate", "target-tokens", "tokenizer", "compress")
        if headers.get(HEADER_PREFIX + name) is not None
    }
    merged: dict[str, Any] = {}
    field = body.get(POLICY_FIELD)
    if field is not None and not isinstance(field, dict):
        raise ApiError(422, "invalid_input", f"'{POLICY_FIELD}' must be an object")
    budget = {"rate", "target_tokens"}
    policy_header = _json_object(headers.get(HEADER_PREFIX + "policy"), "the x-promptshrink-policy header")
    later = [
        {k: v for k, v in route_policy.items() if k not in given_headers},  # single-field headers win over both
        {k: v for k, v in policy_header.items() if k not in given_headers},
        {n.replace("-", "_"): v for n in ("budget-ms", "stop-on-error") if (v := headers.get(HEADER_PREFIX + n))},
        field or {},
    ]
    for source in later:
        if budget & set(source):  # a later budget replaces an earlier one (rate and target_tokens exclude)
            merged.pop("rate", None), merged.pop("target_tokens", None)
        merged.update(source)
    if given_headers & budget and not budget & set(field or {}):
        merged.pop("rate", None), merged.pop("target_tokens", None)
    own = {k: merged.pop(k) for k in list(merged) if k in GatewayOptions.model_fields}
    body[POLICY_FIELD] = merged
    try:
        options = GatewayOptions.model_validate(own)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_input", f"bad compression policy: {problems}") from exc
    return policy_from(body, headers, settings), options


class GatewayMetrics:
    """Fail-open events and, per route and model, tokens before/after and compression time."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.fail_open = Counter(
            "promptshrink_fail_open",
            "requests forwarded uncompressed, by route and reason",
            ["route", "reason"],
            registry=r,
        )
        self.tokens_in = Counter(
            "promptshrink_route_tokens_in", "tokens before compression", ["route", "model"], registry=r
        )
        self.tokens_out = Counter(
            "promptshrink_route_tokens_out", "tokens after compression", ["route", "model"], registry=r
        )
        self.seconds = Histogram(
            "promptshrink_route_compression_seconds",
            "compression time by route, model and method",
            ["route", "model", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.models: set[str] = set()

    def model_label(self, model: Any) -> str:
        """The model name as a label; past ``MAX_MODEL_LABELS`` distinct names, ``other`` (bounded cardinality)."""
        name = model if isinstance(model, str) and len(model) <= 128 else "other"
        if name not in self.models and len(self.models) >= MAX_MODEL_LABELS:
            return "other"
        self.models.add(name)
        return name


Job = Callable[[dict[str, Any], ProxyPolicy, GatewayOptions, CompressOptions], tuple[int, int]]


async def compress_or_forward(
    state: Any, route: str, body: dict[str, Any], headers: Mapping[str, str], job: Job
) -> tuple[dict[str, Any], dict[str, str]]:
    """The body to forward (compressed, or the original on fail-open) and the ``x-promptshrink-*`` headers.

    ``job(body, policy, options, library_options)`` compresses ``body`` in place in a worker thread (the library
    options carry the budget as ``timeout_s``) and returns (tokens before, tokens after). Policy mistakes of the
    caller are 422s, never fail-open.
    """
    settings, gauges = state.settings, state.gauges
    policy, options = gateway_policy(route, body, headers, settings)
    if not policy.enabled:
        return body, {}
    admitted = admit_options(policy, settings)
    method = admitted.method_name
    model = gauges.model_label(body.get("model"))
    started = time.perf_counter()
    work = copy.deepcopy(body)
    budget_s = options.budget_ms / 1000
    try:
        await asyncio.wait_for(state.wait_loaded(method), budget_s)
        lease = state.pool.lease(1)
        if lease is None:
            raise ApiError(503, "overloaded", "the compression queue is full")
        try:
            run = partial(job, work, policy, options, admitted.replace(timeout_s=budget_s))
            before, after = await asyncio.wait_for(state.pool.run(lease, run, light=is_light(method)), budget_s)
        finally:
            lease.close()
    except Exception as exc:  # fail-open is the point: any failure forwards the original body
        reason = "timeout" if isinstance(exc, TimeoutError) else getattr(exc, "code", type(exc).__name__)
        if isinstance(exc, PromptShrinkError) and exc.code == "timeout":
            reason = "timeout"
        gauges.fail_open.labels(route, reason).inc()
        if options.stop_on_error:
            if isinstance(exc, TimeoutError) or reason == "timeout":
                raise ApiError(504, "timeout", f"compression took longer than {options.budget_ms:g} ms") from exc
            err = from_library(exc) if isinstance(exc, PromptShrinkError) else None
            message = err.message if err else f"compression failed: {type(exc).__name__}"
            raise ApiError(500, "compression_failed", message) from exc
        return body, {FAIL_OPEN_HEADER: reason}
    seconds = time.perf_counter() - started
    state.metrics.record_compression(method, seconds, before, after)
    gauges.tokens_in.labels(route, model).inc(before)
    gauges.tokens_out.labels(route, model).inc(after)
    gauges.seconds.labels(route, model, method).observe(seconds)
    values = (method, str(before), str(after), str(before - after), f"{seconds * 1000:.1f}")
    return work, dict(zip(RESULT_HEADERS, values, strict=True))
