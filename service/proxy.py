"""OpenAI-compatible proxy: compress the prompt, forward to the upstream, relay its answer (SSE unchanged)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from pydantic import ConfigDict, Field, ValidationError

import promptshrink
from promptshrink.errors import PromptShrinkError

from .config import Settings
from .errors import ApiError, busy
from .limits import Slots
from .schemas import CompressOptions

POLICY_FIELD = "promptshrink"
HEADER_PREFIX = "x-promptshrink-"
FORWARDED_HEADERS = ("openai-organization", "openai-project", "openai-beta", "accept")
RETRYABLE_UPSTREAM = {408, 409, 429}


class ProxyPolicy(CompressOptions):
    """Per-request compression policy: the ``promptshrink`` body field or ``X-PromptShrink-*`` headers."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    tokenizer: str | None = Field(None, description="default: the request's model if tiktoken knows it")  # type: ignore[assignment]
    roles: list[str] = Field(default_factory=lambda: ["user", "assistant", "tool"])
    skip_last_user: bool = True
    min_tokens: int = Field(32, ge=0)


def policy_from(body: dict[str, Any], headers: Mapping[str, str], settings: Settings) -> ProxyPolicy:
    """Server defaults, overridden by headers, overridden by the body field (which is removed from the body)."""
    given: dict[str, Any] = {}
    for name in ("method", "rate", "target-tokens", "tokenizer", "compress"):
        value = headers.get(HEADER_PREFIX + name)
        if value is not None:
            key = "enabled" if name == "compress" else name.replace("-", "_")
            given[key] = value
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
    return policy


def _tokenizer_for(model: Any) -> str:
    if isinstance(model, str) and model:
        try:
            promptshrink.get_tokenizer(model)
            return model
        except PromptShrinkError:
            pass
    return "cl100k_base"


def compress_body(
    path: str, body: dict[str, Any], policy: ProxyPolicy, method: str, options: dict[str, Any]
) -> tuple[int, int]:
    """Compress the messages (chat) or prompt (completions) of ``body`` in place; returns (tokens in, tokens out)."""
    common = {
        "rate": policy.rate,
        "target_tokens": policy.target_tokens,
        "tokenizer": policy.tokenizer,
        "keep": policy.keep,
    }
    if path == "chat/completions":
        if not isinstance(body.get("messages"), list):
            raise ApiError(422, "invalid_input", "'messages' must be a list of chat messages")
        result = promptshrink.compress_messages(
            body["messages"],
            method,
            roles=tuple(policy.roles),
            skip_last_user=policy.skip_last_user,
            question=policy.question,
            min_tokens=policy.min_tokens,
            **common,
            **options,
        )
        body["messages"] = result.messages
        return result.original_tokens, result.compressed_tokens
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else None
    if prompts is None:
        raise ApiError(422, "invalid_input", "'prompt' must be a string or a list of strings")
    before = after = 0
    out = []
    for p in prompts:
        if not isinstance(p, str) or not p.strip():  # token arrays and empty prompts go through as they are
            out.append(p)
            continue
        r = promptshrink.compress(p, method, question=policy.question, **common, **options)
        before, after = before + r.original_tokens, after + r.compressed_tokens
        out.append(r.text)
    body["prompt"] = out[0] if isinstance(prompt, str) else out
    return before, after


class Upstream:
    """The shared HTTP client for the upstream API."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = (settings.upstream_base_url or "").rstrip("/")
        self.api_key = settings.upstream_api_key
        self.slots = Slots(settings.max_upstream)
        self.retry_after = settings.retry_after_s
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout_s),
            limits=httpx.Limits(max_connections=settings.max_upstream, max_keepalive_connections=32),
        )

    def headers(self, incoming: Mapping[str, str], caller_key: str | None) -> dict[str, str]:
        """Caller's upstream key if it sent one (not the service key), else the server's."""
        out = {k: v for k in FORWARDED_HEADERS if (v := incoming.get(k)) is not None}
        out["content-type"] = "application/json"
        out["accept-encoding"] = "identity"
        key = caller_key or self.api_key
        if key:
            out["authorization"] = f"Bearer {key}"
        return out

    async def open(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        """Send the request and return the (streaming) response; upstream failures become 502/504."""
        if not self.base_url:
            message = "no upstream configured: set PROMPTSHRINK_UPSTREAM_BASE_URL"
            raise ApiError(503, "upstream_not_configured", message, headers={"x-should-retry": "false"})
        if not self.slots.take():
            raise busy(self.retry_after, "the upstream connection pool")
        request = self.client.build_request("POST", f"{self.base_url}/{path}", json=body, headers=headers)
        try:
            response = await self._send(request)
        except BaseException:
            self.slots.give()
            raise
        if response.status_code >= 400:
            try:
                raw = await response.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await self.close(response)
            raise upstream_failure(response.status_code, raw, response.headers)
        return response

    async def read(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.TimeoutException as exc:
            raise ApiError(504, "upstream_timeout", "upstream did not finish its answer in time") from exc
        except httpx.HTTPError as exc:
            raise ApiError(502, "upstream_unreachable", f"upstream answer broke off: {type(exc).__name__}") from exc
        finally:
            await self.close(response)

    async def relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The upstream body as it arrives, byte for byte."""
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await self.close(response)

    async def close(self, response: httpx.Response) -> None:
        await response.aclose()
        self.slots.give()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise ApiError(504, "upstream_timeout", f"upstream did not answer in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise ApiError(502, "upstream_unreachable", f"cannot reach upstream: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self.client.aclose()


def upstream_failure(status: int, raw: bytes, headers: Mapping[str, str]) -> ApiError:
    """502 carrying the upstream's status and message; retryable upstream statuses keep their Retry-After."""
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw.decode("utf-8", "replace")[:1000]
    message = parsed
    if isinstance(parsed, dict):
        inner = parsed.get("error", parsed)
        message = inner.get("message", inner) if isinstance(inner, dict) else inner
        message = message if isinstance(message, str) else parsed.get("detail", json.dumps(parsed)[:1000])
    out_headers = {"x-upstream-status": str(status)}
    retryable = status >= 500 or status in RETRYABLE_UPSTREAM
    out_headers["x-should-retry"] = "true" if retryable else "false"
    if retryable and "retry-after" in headers:
        out_headers["Retry-After"] = headers["retry-after"]
    return ApiError(
        502,
        "upstream_error",
        f"upstream returned {status}: {message}",
        headers=out_headers,
        upstream_status=status,
        upstream_error=parsed,
    )
