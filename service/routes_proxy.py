"""The OpenAI-compatible proxy endpoints: compress the prompt per the route policy, forward, relay the answer."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .compression import check_unicode_body
from .errors import PROXY_ERROR_RESPONSES
from .policy import compress_or_forward
from .proxy import compress_body
from .proxy_schemas import ChatCompletionsBody, CompletionsBody

router = APIRouter()


async def proxied(path: str, request: Request, body: dict[str, Any]) -> Response:
    """Compress ``body`` by the policy of its route (`service.policy`: fail-open past the budget or on an error),
    then forward it upstream."""
    state = request.app.state.ps
    check_unicode_body(body)
    body, headers = await compress_or_forward(state, f"/v1/{path}", body, request.headers, partial(compress_body, path))
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
