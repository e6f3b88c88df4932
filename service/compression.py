"""Turn a validated request into a library call and its result into a response (runs on a worker thread)."""

from __future__ import annotations

import time
from typing import Any

import promptshrink
from promptshrink.api import check_unicode
from promptshrink.budget import make_budget
from promptshrink.errors import CompressionTimeoutError
from promptshrink.methods.base import ProgressFn
from promptshrink.result import CompressionResult

from .config import Settings
from .errors import ApiError
from .metrics import Metrics
from .schemas import CompressOptions, CompressRequest, CompressResponse, MessageResult, MessagesRequest, TextRequest


def check_method(method: str, settings: Settings) -> None:
    """Refuse (422) a method outside the server's allow-list (``PROMPTSHRINK_METHODS``), naming the allowed ones."""
    allowed = settings.allowed_methods
    if method in allowed:
        return
    names = ", ".join(sorted(allowed))
    if method not in promptshrink.registry.method_names():
        raise ApiError(422, "unknown_method", f"unknown method {method!r}; this server allows: {names}")
    raise ApiError(422, "method_not_allowed", f"method {method!r} is not enabled on this server; allowed: {names}")


def check_options(req: CompressOptions, settings: Settings) -> tuple[str, dict[str, Any]]:
    """The method to use and its constructor options; refuses methods, options and tokenizers the server does not
    allow."""
    method = req.method or settings.method
    check_method(method, settings)
    refused = sorted(set(req.options) - settings.allowed_options)
    if refused:
        allowed = ", ".join(sorted(settings.allowed_options)) or "none"
        raise ApiError(
            422, "option_not_allowed", f"options not allowed here: {', '.join(refused)} (allowed: {allowed})"
        )
    if req.tokenizer.strip().startswith("hf:") and not settings.allow_hf_tokenizers:
        raise ApiError(422, "unknown_tokenizer", "hf: tokenizers are disabled on this server; use a tiktoken name")
    return method, {**settings.method_options(method), **req.options}


INLINE_CHARS = 32_000  # model-free work on ~8K tokens takes a few ms: less than a hop to a worker thread costs


def is_light(method: str) -> bool:
    """Whether ``method`` is model-free (runs on the pool's light threads, never behind LM jobs)."""
    return not promptshrink.registry.get_method(method).requires_lm


def runs_inline(req: CompressRequest, method: str) -> bool:
    """Whether to run ``req`` on the event loop rather than a worker thread: a short text for a method marked
    ``linear_time`` (model-free: tokenizer passes and a slice, cheaper than a thread hop and the GIL hand-over)."""
    cls = promptshrink.registry.get_method(method)
    return isinstance(req, TextRequest) and len(req.text) <= INLINE_CHARS and cls.linear_time


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


def _common(req: CompressOptions, settings: Settings) -> dict[str, Any]:
    return {
        "rate": req.rate,
        "target_tokens": req.target_tokens,
        "tokenizer": req.tokenizer,
        "keep": req.keep,
        "device": settings.device,
    }


def _segments(result: CompressionResult, include: bool) -> list[dict[str, Any]] | None:
    return result.to_dict()["segments"] if include else None


def run_compress(
    req: CompressRequest,
    settings: Settings,
    metrics: Metrics,
    queued_at: float,
    deadline: float,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Compress one item before ``deadline`` (a `time.perf_counter` value); library errors propagate (the caller
    maps them; `CompressionTimeoutError` frees this thread once the deadline has passed, or once ``progress``, the
    text's progress callback, raises it because the caller has gone)."""
    method, options = check_options(req, settings)
    start = time.perf_counter()
    left = deadline - start
    if left <= 0:
        raise CompressionTimeoutError("the request waited in the queue past the server's request timeout")
    options = {**options, "timeout_s": left}
    if isinstance(req, TextRequest):
        result = promptshrink.compress(
            req.text,
            method,
            question=req.question,
            protect_numbers=req.protect_numbers,
            seed=req.seed,
            progress=progress,
            **_common(req, settings),
            **options,
        )
        out = _from_result("text", result, req.include_segments)
    elif isinstance(req, MessagesRequest):
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        mres = promptshrink.compress_messages(
            messages,
            method,
            roles=tuple(req.roles),
            skip_last_user=req.skip_last_user,
            question=req.question,
            min_tokens=req.min_tokens,
            **_common(req, settings),
            **options,
        )
        per_message = [
            None
            if r is None
            else MessageResult(
                original_tokens=r.original_tokens,
                compressed_tokens=r.compressed_tokens,
                budget=r.budget,
                timings=r.timings,
                segments=_segments(r, req.include_segments),
            ).model_dump()
            for r in mres.per_message
        ]
        done = next((r for r in mres.per_message if r is not None), None)
        out = {
            "kind": "messages",
            "method": mres.method,
            "tokenizer": req.tokenizer,
            "original_tokens": mres.original_tokens,
            "compressed_tokens": mres.compressed_tokens,
            "budget": done.budget if done else make_budget(req.rate, req.target_tokens).describe(),
            "messages": mres.messages,
            "per_message": per_message,
        }
    else:
        passages = [p if isinstance(p, str) else p.model_dump(exclude_none=True) for p in req.passages or []]
        pres = promptshrink.compress_passages(passages, req.question, method, **_common(req, settings), **options)
        out = _from_result("passages", pres.result, req.include_segments)
        out["passages"] = pres.passages
    return respond(out, method, metrics, start, queued_at)


def respond(out: dict[str, Any], method: str, metrics: Metrics, start: float, queued_at: float) -> dict[str, Any]:
    """Add the derived fields, record the metrics and validate the response body."""
    out["tokens_saved"] = out["original_tokens"] - out["compressed_tokens"]
    out["ratio"] = out["compressed_tokens"] / out["original_tokens"] if out["original_tokens"] else 1.0
    out["elapsed_s"] = time.perf_counter() - queued_at
    metrics.record_compression(method, time.perf_counter() - start, out["original_tokens"], out["compressed_tokens"])
    return CompressResponse.model_validate(out).model_dump(exclude_none=True)


def text_response(
    result: CompressionResult, req: CompressRequest, method: str, metrics: Metrics, start: float, queued_at: float
) -> dict[str, Any]:
    """The response body of a text request from its result."""
    return respond(_from_result("text", result, req.include_segments), method, metrics, start, queued_at)


def _from_result(kind: str, result: CompressionResult, include_segments: bool) -> dict[str, Any]:
    data = result.to_dict(include_segments=include_segments)
    data.pop("ratio", None)
    return {"kind": kind, **data}
