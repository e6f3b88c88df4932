"""The OpenAI-compatible proxy endpoints: compress the prompt with the library, forward, relay the answer."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .compression import check_unicode_body, is_light, library_options
from .errors import PROXY_ERROR_RESPONSES, busy, timed_out
from .proxy import compress_body, policy_from
from .proxy_schemas import ChatCompletionsBody, CompletionsBody

router = APIRouter()


async def proxied(path: str, request: Request, body: dict[str, Any]) -> Response:
    """Compress ``body`` by its policy (the ``promptshrink`` field or headers), then forward it upstream."""
    state = request.app.state.ps
    settings = state.settings
    check_unicode_body(body)
    policy = policy_from(body, request.headers, settings)
    headers: dict[str, str] = {}
    if policy.enabled:
        started = time.perf_counter()
        options = library_options(policy, settings)
        await state.wait_loaded(options.method_name)
        lease = state.pool.lease(1)
        if lease is None:
            raise busy(settings.retry_after_s, "the compression queue")
        left = settings.request_timeout_s - (time.perf_counter() - started)
        try:  # the library stops, freeing the thread, when the time is up
            job = partial(compress_body, path, body, policy, options.replace(timeout_s=max(left, 1e-3)))
            work = state.pool.run(lease, job, light=is_light(options.method_name))
            before, after = await asyncio.wait_for(work, settings.request_timeout_s)
        except TimeoutError as exc:
            raise timed_out() from exc
        finally:
            lease.close()
        method = options.method_name
        state.metrics.record_compression(method, time.perf_counter() - started, before, after)
        headers = {
            "x-promptshrink-method": method,
            "x-promptshrink-original-tokens": str(before),
            "x-promptshrink-compressed-tokens": str(after),
            "x-promptshrink-tokens-saved": str(before - after),
        }
    upstream_key = request.state.upstream_key
    upstream = await state.upstream.open(path, body, state.upstream.headers(request.headers, upstream_key))
    return await state.upstream.respond(upstream, bool(body.get("stream")), headers)


@router.post("/v1/chat/completions", responses=PROXY_ERROR_RESPONSES)
async def chat_completions(request: Request, _: ChatCompletionsBody) -> Response:
    """OpenAI-compatible: compress the messages, forward upstream, relay the answer (streams unchanged)."""
    return await proxied("chat/completions", request, await request.json())


@router.post("/v1/completions", responses=PROXY_ERROR_RESPONSES)
async def completions(request: Request, _: CompletionsBody) -> Response:
    """OpenAI-compatible legacy completions: compress the prompt, forward upstream, relay the answer."""
    return await proxied("completions", request, await request.json())
