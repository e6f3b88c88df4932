"""Admission (a plan decided once per request) and the response built once from the library's result.

`admit` checks a request against the server's allow-lists and turns it into library options
(`promptshrink.request.CompressOptions`) with one registry lookup; `run` (on a worker thread, or inline for
short model-free work) calls the library pipeline with those options; `response` adds the derived fields once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

import promptshrink
from promptshrink.errors import CompressionTimeoutError
from promptshrink.methods.base import Compressor, ProgressFn
from promptshrink.pipeline import compress_text
from promptshrink.request import CompressOptions, check_unicode, wire_fields
from promptshrink.result import CompressionResult
from promptshrink.structured import messages_with, passages_with

from .config import Settings
from .errors import ApiError
from .metrics import Metrics
from .schemas import CompressRequest, MessageResult, MessagesRequest, TextRequest

INLINE_CHARS = 32_000  # model-free work on ~8K tokens takes a few ms: less than a hop to a worker thread costs


def check_method(method: str, settings: Settings) -> None:
    """Refuse (422) a method outside the server's allow-list (``PROMPTSHRINK_METHODS``), naming the allowed ones."""
    allowed = settings.allowed_methods
    if method in allowed:
        return
    names = ", ".join(sorted(allowed))
    if method not in promptshrink.registry.method_names():
        raise ApiError(422, "unknown_method", f"unknown method {method!r}; this server allows: {names}")
    raise ApiError(422, "method_not_allowed", f"method {method!r} is not enabled on this server; allowed: {names}")


def library_options(body: BaseModel, settings: Settings) -> CompressOptions:
    """The library options of a request body (or proxy policy): its wire fields, the server's default method and
    method options, and the server's device; refuses methods, options and tokenizers the server does not allow."""
    method = getattr(body, "method", None) or settings.method
    check_method(method, settings)
    given: dict[str, Any] = getattr(body, "options", {})
    refused = sorted(set(given) - settings.allowed_options)
    if refused:
        allowed = ", ".join(sorted(settings.allowed_options)) or "none"
        raise ApiError(
            422, "option_not_allowed", f"options not allowed here: {', '.join(refused)} (allowed: {allowed})"
        )
    tokenizer = getattr(body, "tokenizer", None)
    if isinstance(tokenizer, str) and tokenizer.strip().startswith("hf:") and not settings.allow_hf_tokenizers:
        raise ApiError(422, "unknown_tokenizer", "hf: tokenizers are disabled on this server; use a tiktoken name")
    fields = {f.name: getattr(body, f.name) for f in wire_fields() if getattr(body, f.name, None) is not None}
    fields.update(method=method, options={**settings.method_options(method), **given}, device=settings.device)
    return CompressOptions(**fields)


@dataclass(frozen=True)
class Admission:
    """A request as decided at admission: its library options and the method's class (looked up once)."""

    req: CompressRequest
    options: CompressOptions
    method: type[Compressor]

    @property
    def name(self) -> str:
        return self.options.method_name

    @property
    def inline(self) -> bool:
        """Run on the event loop rather than a worker thread: a short text for a method marked ``linear_time``
        (model-free: tokenizer passes and a slice, cheaper than a thread hop and the GIL hand-over)."""
        return isinstance(self.req, TextRequest) and len(self.req.text) <= INLINE_CHARS and self.method.linear_time

    @property
    def light(self) -> bool:
        """Model-free: runs on the pool's light threads, never behind LM jobs."""
        return not self.method.requires_lm

    @property
    def batchable(self) -> bool:
        """A text request for a method whose LM passes batch (it declares ``batches``)."""
        return isinstance(self.req, TextRequest) and self.method.batches


def is_light(method: str) -> bool:
    """Whether ``method`` is model-free (runs on the pool's light threads, never behind LM jobs)."""
    return not promptshrink.registry.get_method(method).requires_lm


def admit(req: CompressRequest, settings: Settings) -> Admission:
    """Check ``req`` once against the server's rules; the plan every later step follows."""
    options = library_options(req, settings)
    return Admission(req, options, promptshrink.registry.get_method(options.method_name))


def check_unicode_body(value: Any, where: str = "body") -> None:
    """Refuse (422) a JSON body holding a lone surrogate (``"\\ud800"``) anywhere: it cannot be re-encoded as UTF-8
    to forward upstream, nor tokenized."""
    if isinstance(value, str):
        check_unicode(where, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_unicode_body(key, where)
            check_unicode_body(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_unicode_body(item, f"{where}[{i}]")


def time_left(deadline: float) -> float:
    """Seconds until ``deadline`` (a `time.perf_counter` value); `CompressionTimeoutError` when none are left."""
    left = deadline - time.perf_counter()
    if left <= 0:
        raise CompressionTimeoutError("the request waited in the queue past the server's request timeout")
    return left


def run(
    adm: Admission, metrics: Metrics, queued_at: float, deadline: float, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Compress one admitted request before ``deadline`` (a `time.perf_counter` value); library errors propagate
    (the caller maps them; `CompressionTimeoutError` frees this thread once the deadline has passed, or once
    ``progress``, the library's progress callback, raises it because the caller has gone)."""
    start = time.perf_counter()
    req, options = adm.req, adm.options.replace(timeout_s=time_left(deadline), progress=progress)
    if isinstance(req, TextRequest):
        out = from_result("text", compress_text(req.text, options), req.include_segments)
    elif isinstance(req, MessagesRequest):
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        kw = {"roles": tuple(req.roles), "skip_last_user": req.skip_last_user, "min_tokens": req.min_tokens}
        mres = messages_with(messages, options, **kw)
        per_message = [
            None
            if r is None
            else MessageResult(
                original_tokens=r.original_tokens,
                compressed_tokens=r.compressed_tokens,
                budget=r.budget,
                timings=r.timings,
                segments=r.to_dict()["segments"] if req.include_segments else None,
            ).model_dump()
            for r in mres.per_message
        ]
        out = {
            "kind": "messages",
            "method": mres.method,
            "tokenizer": options.tokenizer,
            "original_tokens": mres.original_tokens,
            "compressed_tokens": mres.compressed_tokens,
            "budget": next((r.budget for r in mres.per_message if r is not None), options.budget.describe()),
            "messages": mres.messages,
            "per_message": per_message,
        }
    else:
        passages = [p if isinstance(p, str) else p.model_dump(exclude_none=True) for p in req.passages or []]
        pres = passages_with(passages, options)
        out = {**from_result("passages", pres.result, req.include_segments), "passages": pres.passages}
    return response(out, adm.name, metrics, start, queued_at)


def response(out: dict[str, Any], method: str, metrics: Metrics, start: float, queued_at: float) -> dict[str, Any]:
    """The response body: ``out`` and the fields derived from it (computed here only), with the metrics recorded.
    FastAPI validates it once against `CompressResponse` (the route's response model)."""
    original, compressed = out["original_tokens"], out["compressed_tokens"]
    out["tokens_saved"] = original - compressed
    out["ratio"] = compressed / original if original else 1.0
    out["elapsed_s"] = time.perf_counter() - queued_at
    metrics.record_compression(method, time.perf_counter() - start, original, compressed)
    return out


def from_result(kind: str, result: CompressionResult, include_segments: bool) -> dict[str, Any]:
    """The body fields of a `CompressionResult` (the derived ratio/tokens_saved are added by `response`)."""
    data = result.to_dict(include_segments=include_segments)
    del data["ratio"], data["tokens_saved"]
    return {"kind": kind, **data}
