"""Proxy routes beyond OpenAI chat: Anthropic Messages, OpenAI Responses, and pass-through models/embeddings.

- ``POST /v1/messages`` and ``/v1/messages/count_tokens`` (Anthropic): text blocks and ``tool_result`` contents
  are compressed per the gateway policy (`service.policy`), ``system``, tools, images, ``cache_control``,
  ``thinking`` blocks and unknown fields pass as they are; ``x-api-key``/``authorization``, ``anthropic-version``
  and ``anthropic-beta`` are relayed, and so are streams, error statuses and their headers.
- ``POST /v1/responses`` (OpenAI Responses): ``input`` items are compressed (``message`` text parts and
  ``function_call_output``), ``instructions``, ``previous_response_id``, ``store``, ``tools``, ``stream`` pass.
  ``GET``/``DELETE /v1/responses/{id}`` and ``GET .../input_items`` pass through.
- ``GET /v1/models``, ``POST /v1/embeddings``: pass-through, no compression.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

import promptshrink
from promptshrink.request import CompressOptions

from .compression import check_unicode_body
from .errors import ApiError
from .policy import GatewayOptions, compress_or_forward
from .proxy import ProxyPolicy, conversation_arguments, relayed_headers

ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")
_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _compress_job(field: str, format: str) -> Callable[..., tuple[int, int]]:
    """A worker-thread job compressing ``body[field]`` in the API ``format``."""

    def job(
        body: dict[str, Any], policy: ProxyPolicy, options: GatewayOptions, admitted: CompressOptions
    ) -> tuple[int, int]:
        value = body.get(field)
        if value is None or value == [] or value == "":
            return 0, 0
        arguments = conversation_arguments(policy, options, admitted)
        result = promptshrink.compress_messages(value, admitted.method_name, format=format, **arguments)
        body[field] = result.messages
        return result.original_tokens, result.compressed_tokens

    return job


MESSAGES_JOB = _compress_job("messages", "anthropic")
RESPONSES_JOB = _compress_job("input", "responses")


def anthropic_stream_error(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The proxy's stream-broke-off event in Anthropic's shape (``event: error``), other events unchanged."""

    async def relay() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if not chunk.startswith(b"event:") and b"upstream_stream_broken" in chunk:
                yield (
                    b'event: error\ndata: {"type": "error", "error": {"type": "api_error", '
                    b'"message": "the upstream stream broke off"}}\n\n'
                )
            else:
                yield chunk

    return relay()


def add_gateway_routes(
    app: FastAPI,
    state: Any,
    caller_key: Callable[[Request], Awaitable[str | None]],
    key_matches: Callable[[str | None, frozenset[str]], bool],
) -> None:
    """Add the routes to ``app``; ``caller_key`` is the OpenAI routes' auth dependency, ``key_matches`` the
    constant-time service key check."""
    settings = state.settings

    def anthropic_headers(request: Request) -> dict[str, str]:
        """Upstream headers for an Anthropic call: the caller's credential (never a service key), or the server's
        upstream key as ``x-api-key`` for callers that proved a service key (or the anonymous opt-in)."""
        assert state.upstream is not None
        incoming = request.headers
        out = state.upstream.headers(incoming, None)
        out.update({k: v for k in ANTHROPIC_HEADERS if (v := incoming.get(k)) is not None})
        auth = incoming.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        given = {"x-api-key": incoming.get("x-api-key"), "authorization": bearer}
        keys = settings.api_keys
        if keys:
            service = [h for h, v in given.items() if key_matches(v, keys)]
            if not service:
                message = "missing or wrong API key: send the service key as 'X-API-Key' or 'Authorization: Bearer'"
                raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
            given = {h: v for h, v in given.items() if h not in service}
        if given.get("x-api-key"):
            out["x-api-key"] = given["x-api-key"]
        if given.get("authorization"):
            out["authorization"] = f"Bearer {given['authorization']}"
        server_key = settings.upstream_api_key if keys or settings.allow_anonymous_upstream_key else None
        if not given.get("x-api-key") and not given.get("authorization") and server_key:
            out["x-api-key"] = server_key
        return out

    async def forward(
        route: str,
        path: str,
        request: Request,
        body: dict[str, Any],
        headers: dict[str, str],
        job: Callable[..., tuple[int, int]] | None,
        anthropic: bool = False,
    ) -> Response:
        assert state.upstream is not None
        check_unicode_body(body)
        extra: dict[str, str] = {}
        if job is not None:
            body, extra = await compress_or_forward(state, route, body, request.headers, job)
        upstream = await state.upstream.open(path, body, headers)
        stream = bool(body.get("stream")) and upstream.status_code < 400
        if not (anthropic and stream):
            return await state.upstream.respond(upstream, stream, extra)
        out = {**relayed_headers(upstream.headers), **extra}
        media = upstream.headers.get("content-type", "text/event-stream")
        events = anthropic_stream_error(state.upstream.relay(upstream))
        return StreamingResponse(events, upstream.status_code, out, media)

    async def passthrough(request: Request, path: str, key: str | None, verb: str) -> Response:
        assert state.upstream is not None
        if not all(_ID.fullmatch(p) for p in path.split("/")):
            raise ApiError(422, "invalid_input", "a response id has only letters, digits, '_' and '-'")
        headers = state.upstream.headers(request.headers, key)
        upstream = await state.upstream.open(path, None, headers, verb=verb, query=request.url.query)
        return await state.upstream.respond(upstream, False, {})

    @app.post("/v1/messages")
    async def messages(request: Request, body: Annotated[dict[str, Any], Body()]) -> Response:
        """Anthropic Messages: compress text and tool results per the gateway policy, forward, relay."""
        return await forward("/v1/messages", "messages", request, body, anthropic_headers(request), MESSAGES_JOB, True)

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request, body: Annotated[dict[str, Any], Body()]) -> Response:
        """Anthropic token counting, of the body as the proxy would send it (compressed the same way)."""
        headers = anthropic_headers(request)
        return await forward("/v1/messages", "messages/count_tokens", request, body, headers, MESSAGES_JOB)

    @app.post("/v1/responses")
    async def responses(
        request: Request, body: Annotated[dict[str, Any], Body()], key: str | None = Depends(caller_key)
    ) -> Response:
        """OpenAI Responses: compress ``input`` items per the gateway policy, forward, relay (typed SSE events)."""
        headers = state.upstream.headers(request.headers, key)
        return await forward("/v1/responses", "responses", request, body, headers, RESPONSES_JOB)

    @app.get("/v1/responses/{response_id}")
    async def get_response(request: Request, response_id: str, key: str | None = Depends(caller_key)) -> Response:
        """Pass-through: a stored response."""
        return await passthrough(request, f"responses/{response_id}", key, "GET")

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(request: Request, response_id: str, key: str | None = Depends(caller_key)) -> Response:
        """Pass-through: delete a stored response."""
        return await passthrough(request, f"responses/{response_id}", key, "DELETE")

    @app.get("/v1/responses/{response_id}/input_items")
    async def input_items(request: Request, response_id: str, key: str | None = Depends(caller_key)) -> Response:
        """Pass-through: the input items of a stored response (query parameters relayed)."""
        return await passthrough(request, f"responses/{response_id}/input_items", key, "GET")

    @app.get("/v1/models")
    async def models(request: Request, key: str | None = Depends(caller_key)) -> Response:
        """Pass-through: the upstream's model list."""
        return await passthrough(request, "models", key, "GET")

    @app.post("/v1/embeddings")
    async def embeddings(
        request: Request, body: Annotated[dict[str, Any], Body()], key: str | None = Depends(caller_key)
    ) -> Response:
        """Pass-through, never compressed: embeddings of the exact input."""
        check_unicode_body(body)
        assert state.upstream is not None
        upstream = await state.upstream.open("embeddings", body, state.upstream.headers(request.headers, key))
        return await state.upstream.respond(upstream, False, {})
