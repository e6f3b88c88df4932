"""OpenAI-compatible proxy: compress the prompt, forward to the upstream, relay its answer (SSE unchanged)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Annotated, Any

import httpx
from fastapi.responses import Response, StreamingResponse
from pydantic import ConfigDict, Field, ValidationError

from promptshrink.errors import InvalidInputError
from promptshrink.formats import compress_conversation, range_rate
from promptshrink.pipeline import compress_texts
from promptshrink.question_split import split_trailing_question
from promptshrink.request import MAX_MARKER_CHARS, MAX_MARKERS, CompressOptions
from promptshrink.structured import last_text, with_text
from promptshrink.target_tokenizer import DEFAULT_TOKENIZER, bundled_encoding_name, get_tokenizer

from .config import Settings
from .errors import ApiError, busy
from .limits import Slots
from .metrics import Metrics
from .schemas import CompressOptions as OptionsBody
from .sse import EventBuffer

if TYPE_CHECKING:
    from .policy import GatewayOptions

log = logging.getLogger("promptshrink.service")
POLICY_FIELD = "promptshrink"
HEADER_PREFIX = "x-promptshrink-"
FORWARDED_HEADERS = ("openai-organization", "openai-project", "openai-beta", "accept")
# Upstream response headers SDKs act on (retries, rate limits, support ids); nothing else, never Set-Cookie.
RELAYED_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-request-id",
    "request-id",
    "x-should-retry",
    "openai-processing-ms",
)
RELAYED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
RETRY = {"x-should-retry": "true"}


class ProxyPolicy(OptionsBody):  # type: ignore[misc,valid-type]
    """Per-request compression policy: the ``promptshrink`` body field or ``X-PromptShrink-*`` headers."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    tokenizer: str | None = Field(None, description="default: the request's model if tiktoken knows it")  # type: ignore[assignment]
    roles: list[str] = Field(default_factory=lambda: ["user", "assistant", "tool"])
    skip_last_user: bool = True
    min_tokens: int = Field(32, ge=0)
    split_question: bool = Field(
        True,
        description="keep a trailing question/instruction of the prompt (completions) or of the final user "
        "message (chat) verbatim and compress the context before it for that question",
    )
    question_markers: list[Annotated[str, Field(max_length=MAX_MARKER_CHARS)]] | None = Field(
        None, max_length=MAX_MARKERS, description="what opens that tail; default: the server's"
    )


def policy_from(body: dict[str, Any], headers: Mapping[str, str], settings: Settings) -> ProxyPolicy:
    """Server defaults, overridden by headers, overridden by the body field (which is removed from the body)."""
    given: dict[str, Any] = {}
    for name in ("method", "rate", "target-tokens", "tokenizer", "compress"):
        value = headers.get(HEADER_PREFIX + name)
        if value is not None:
            key = "enabled" if name == "compress" else name.replace("-", "_")
            given[key] = _header_number(value, float if name == "rate" else int) if name in NUMBERS else value
    field = body.pop(POLICY_FIELD, None)
    if field is not None and not isinstance(field, dict):
        raise ApiError(422, "invalid_input", f"'{POLICY_FIELD}' must be an object")
    given.update(field or {})
    if given.get("rate") is None and given.get("target_tokens") is None:
        given["target_tokens"] = settings.proxy_target_tokens
        given["rate"] = None if settings.proxy_target_tokens else settings.proxy_rate
    given.setdefault("method", settings.effective_proxy_method)
    try:
        policy = ProxyPolicy.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_input", f"bad compression policy: {problems}") from exc
    if policy.enabled is None:
        policy.enabled = settings.proxy_compress
    if policy.tokenizer is None:
        policy.tokenizer = _tokenizer_for(body.get("model"))
    if policy.question_markers is None:
        policy.question_markers = list(settings.proxy_question_markers)
    return policy


NUMBERS = ("rate", "target-tokens")


def _header_number(value: str, kind: type[float] | type[int]) -> float | int | str:
    """A numeric header as a number (headers are text; the body field must send JSON numbers), else as sent,
    for the policy's validation to refuse."""
    try:
        number = kind(value)
    except ValueError:
        return value
    return value if number != number else number  # NaN stays text: refused as not a number


def _tokenizer_for(model: Any) -> str:
    """The bundled tiktoken encoding of the request's model (``gpt-4o`` -> ``o200k_base``), else cl100k_base.

    A name lookup only: the model field never loads a tokenizer (no ``hf:``, no paths, no network).
    """
    encoding = bundled_encoding_name(model) if isinstance(model, str) and not model.startswith("hf:") else None
    return encoding or DEFAULT_TOKENIZER


def check_upstream_key(settings: Settings) -> None:
    """Refuse a server upstream key that anonymous callers could spend, unless explicitly allowed (then warn)."""
    if not settings.upstream_api_key or settings.api_keys:
        return
    if not settings.allow_anonymous_upstream_key:
        raise InvalidInputError(
            "PROMPTSHRINK_UPSTREAM_API_KEY is set but PROMPTSHRINK_API_KEYS is not, so anyone who can reach the "
            "service could spend the upstream key: set service keys, or PROMPTSHRINK_ALLOW_ANONYMOUS_UPSTREAM_KEY=1 "
            "to allow it knowingly"
        )
    log.warning("the server's upstream key is used for unauthenticated callers (ALLOW_ANONYMOUS_UPSTREAM_KEY)")


def compress_body(
    path: str, body: dict[str, Any], policy: ProxyPolicy, options: GatewayOptions, admitted: CompressOptions
) -> tuple[int, int]:
    """Compress the messages (chat) or prompt (completions) of ``body`` in place with the library options
    ``admitted`` and the route policy ``options`` (``split_question`` keeps a trailing question verbatim); returns
    (tokens in, tokens out). A prompt is a ``text`` part: ``parts``, ``min_tokens`` and ``ranges`` apply to it."""
    if path == "chat/completions":
        if not isinstance(body.get("messages"), list):
            raise ApiError(422, "invalid_input", "'messages' must be a list of chat messages")
        return _compress_chat(body, policy, options, admitted)
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else None
    if prompts is None:
        raise ApiError(422, "invalid_input", "'prompt' must be a string or a list of strings")
    if options.parts is not None and "text" not in options.parts:
        return 0, 0
    # token arrays and empty prompts go through as they are, and so do prompts the policy leaves alone
    texts = [i for i, p in enumerate(prompts) if isinstance(p, str) and p.strip()]
    counts = get_tokenizer(admitted.tokenizer).count_many([prompts[i] for i in texts])
    ranges = options.range_tuples()
    by_rate: dict[float | None, list[int]] = {}
    for i, n in zip(texts, counts):
        rate = admitted.rate if ranges is None else range_rate(n, ranges)
        if n >= policy.min_tokens and (ranges is None or rate is not None):
            by_rate.setdefault(rate, []).append(i)
    out, before, after = list(prompts), 0, 0
    for rate, group in by_rate.items():
        kept = admitted if ranges is None else admitted.replace(rate=rate, target_tokens=None)
        for i, r in zip(group, compress_texts([prompts[i] for i in group], kept)):
            out[i], before, after = r.text, before + r.original_tokens, after + r.compressed_tokens
    body["prompt"] = out[0] if isinstance(prompt, str) else out
    return before, after


def conversation_arguments(policy: ProxyPolicy, options: GatewayOptions, admitted: CompressOptions) -> dict[str, Any]:
    """The `promptshrink.formats.compress_conversation` keywords of a proxy request: the admitted library options
    (budget, tokenizer, keep, seed, device, method options, the budget's ``timeout_s``...; no ``split_question``:
    the latest user turn is left whole, or split by the chat route itself), the policy's roles and sizes, and the
    route policy's parts, ranges and schedule."""
    skip = ("method", "split_question")
    fields = {f.name: getattr(admitted, f.name) for f in dataclasses.fields(admitted) if f.name not in skip}
    kw = {"roles": tuple(policy.roles), "skip_last_user": policy.skip_last_user, "min_tokens": policy.min_tokens}
    return {**fields, **kw, **options.conversation_options()}


def _compress_chat(
    body: dict[str, Any], policy: ProxyPolicy, options: GatewayOptions, admitted: CompressOptions
) -> tuple[int, int]:
    """Compress the chat messages; a final user message holding context + question is split first (its last text
    part when the content is a list of parts: the other parts stay as they are, where they are).

    The split puts the context and the tail in two user messages for the library (so the tail is the query it
    leaves alone and scores against) and joins them again afterwards. The messages are read as
    ``format="openai"``: tool outputs by their structure, older turns harder (`promptshrink.formats`), with the
    route policy's parts, ranges and schedule.
    """
    messages: list[Any] = body["messages"]
    users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    split, at, part = None, users[-1] if users else None, None
    if at is not None and policy.skip_last_user and admitted.split_question:
        part, text = last_text(messages[at].get("content"))
        split = split_trailing_question(text, admitted.question_markers) if text is not None else None
    if split is not None:
        context = {**messages[at], "content": with_text(messages[at]["content"], part, split.context)}
        messages = [*messages[:at], context, {"role": "user", "content": split.tail}, *messages[at + 1 :]]
    arguments = conversation_arguments(policy, options, admitted)  # the split is done here
    result = compress_conversation(messages, admitted.method_name, format="openai", **arguments)
    out = result.messages
    if split is not None:
        content = out[at]["content"]
        joined = {**out[at], "content": with_text(content, part, last_text(content)[1] + split.tail)}
        out = [*out[:at], joined, *out[at + 2 :]]
    body["messages"] = out
    return result.original_tokens, result.compressed_tokens


class Upstream:
    """The shared HTTP client for the upstream API.

    It keeps no cookies (an upstream ``Set-Cookie`` must never reach another caller's request) and relays only
    the response headers in ``RELAYED_HEADERS``.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.base_url = (settings.upstream_base_url or "").rstrip("/")
        self.slots = Slots(settings.max_upstream)
        self.retry_after = settings.retry_after_s
        self.metrics = metrics
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout_s),
            limits=httpx.Limits(max_connections=settings.max_upstream, max_keepalive_connections=32),
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # stores and sends nothing
        )

    @staticmethod
    def headers(incoming: Mapping[str, str], upstream_key: str | None) -> dict[str, str]:
        """The caller's safe headers plus ``upstream_key`` (decided by the authentication step) as bearer."""
        out = {k: v for k in FORWARDED_HEADERS if (v := incoming.get(k)) is not None}
        out["content-type"] = "application/json"
        out["accept-encoding"] = "identity"
        if upstream_key:
            out["authorization"] = f"Bearer {upstream_key}"
        return out

    async def open(
        self, path: str, body: dict[str, Any] | None, headers: dict[str, str], verb: str = "POST", query: str = ""
    ) -> httpx.Response:
        """Send the request and return the (streaming) response; unreachable or slow upstreams become 502/504.

        ``verb`` and ``query`` (a raw query string) serve the pass-through routes (GET /v1/models...)."""
        if not self.base_url:
            message = "no upstream configured: set PROMPTSHRINK_UPSTREAM_BASE_URL"
            raise ApiError(503, "upstream_not_configured", message, headers={"x-should-retry": "false"})
        if not self.slots.take():
            raise busy(self.retry_after, "the upstream connection pool")
        url = f"{self.base_url}/{path}" + (f"?{query}" if query else "")
        request = self.client.build_request(verb, url, json=body, headers=headers)
        try:
            response = await self._send(request)
        except BaseException:
            self.slots.give()
            raise
        self.metrics.upstream.labels(str(response.status_code)).inc()
        return response

    async def respond(self, response: httpx.Response, stream: bool, headers: dict[str, str]) -> Response:
        """The upstream's answer for the caller: its status, body and SDK-relevant headers, plus ``headers``.

        Error statuses are relayed as they are (an SDK raises the same exception as when calling the upstream
        directly); a successful stream is relayed chunk by chunk.
        """
        out = {**relayed_headers(response.headers), **headers}
        media_type = response.headers.get("content-type", "application/json")
        if stream and response.status_code < 400:
            return StreamingResponse(self.relay(response), response.status_code, out, media_type)
        return Response(await self.read(response), response.status_code, out, media_type)

    async def read(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.TimeoutException as exc:
            message = "upstream did not finish its answer in time"
            raise ApiError(504, "upstream_timeout", message, headers=RETRY) from exc
        except httpx.HTTPError as exc:
            message = f"upstream answer broke off: {type(exc).__name__}"
            raise ApiError(502, "upstream_unreachable", message, headers=RETRY) from exc
        finally:
            await self.close(response)

    async def relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The upstream body as it arrives, unchanged; server-sent events are passed on whole.

        If the upstream breaks off mid-stream, the incomplete event is dropped and the caller gets a final SSE
        error event (the ``openai`` SDK raises it as ``APIError``) and a cleanly ended response; the break is
        logged once and counted in ``/metrics``.
        """
        sse = response.headers.get("content-type", "").startswith("text/event-stream")
        events = EventBuffer()
        broken = None
        try:
            async for chunk in response.aiter_raw():
                if not sse:
                    yield chunk
                elif complete := events.feed(chunk):
                    yield complete
            if sse and events.incomplete:  # the upstream closed the connection mid-event (HTTP/1.0 framing)
                broken = "the connection closed inside an event"
        except httpx.HTTPError as exc:
            broken = f"{type(exc).__name__}: {exc}"
        finally:
            await self.close(response)
        if broken is not None:
            self.metrics.errors.labels("upstream_stream_broken").inc()
            log.warning("upstream stream broke off: %s", broken)
            if sse:
                error = {"code": "upstream_stream_broken", "message": "the upstream stream broke off"}
                yield f"data: {json.dumps({'error': error})}\n\n".encode()

    async def close(self, response: httpx.Response) -> None:
        await response.aclose()
        self.slots.give()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            message = f"upstream did not answer in time ({type(exc).__name__})"
            raise ApiError(504, "upstream_timeout", message, headers=RETRY) from exc
        except httpx.HTTPError as exc:
            message = f"cannot reach upstream: {type(exc).__name__}: {exc}"
            raise ApiError(502, "upstream_unreachable", message, headers=RETRY) from exc

    async def aclose(self) -> None:
        await self.client.aclose()


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream response headers an SDK needs: retry hints, rate limits, the request id."""
    return {k: v for k, v in headers.items() if k.lower() in RELAYED_HEADERS or k.lower().startswith(RELAYED_PREFIXES)}
