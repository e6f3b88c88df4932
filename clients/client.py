"""`PromptShrinkClient` / `AsyncPromptShrinkClient`: the library's `compress*` calls, run by a remote service.

Results are the library's own types and errors are its error classes (matched by code), so switching between
``promptshrink.compress(...)`` and ``client.compress(...)`` changes nothing else. 503s and timeouts are retried
with exponential backoff (honouring Retry-After).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx

from promptshrink.errors import PromptShrinkError, library_errors
from promptshrink.request import request_fields
from promptshrink.result import CompressionResult, MessagesResult, PassagesResult, SegmentDecision

LIBRARY_ERRORS: dict[str, type[PromptShrinkError]] = library_errors()
NOT_RETRIED = {"model_unavailable", "upstream_not_configured"}


class ServiceError(PromptShrinkError):
    """An error the service reported that has no library counterpart (auth, overload, timeout, upstream)."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.body = status, code, body or {}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message, error = "http_error", response.text[:500], {}
    cls = LIBRARY_ERRORS.get(code)
    if cls is not None and response.status_code in (400, cls.status):
        raise cls(message)
    raise ServiceError(response.status_code, code, message, error)


def _retry_delay(attempt: int, response: httpx.Response | None, backoff: float) -> float | None:
    """Seconds to wait before retrying, or None when the outcome is final."""
    if response is not None:
        if response.status_code != 503:
            return None
        try:
            if response.json()["error"]["code"] in NOT_RETRIED:
                return None
        except (ValueError, KeyError, TypeError):
            pass
        after = response.headers.get("retry-after", "")
        if after.replace(".", "", 1).isdigit():
            return float(after)
    return backoff * 2**attempt * (0.5 + random.random() / 2)


def _payload(kind: str, data: Any, method: str | None, **fields: Any) -> dict[str, Any]:
    out = {kind: data, "method": method, **fields}
    return {k: v for k, v in out.items() if v is not None}


def _segments(data: dict[str, Any]) -> list[SegmentDecision]:
    return [SegmentDecision(**s) for s in data.get("segments") or []]


def to_result(data: dict[str, Any]) -> CompressionResult:
    return CompressionResult(
        text=data.get("text") or "",
        original_tokens=data["original_tokens"],
        compressed_tokens=data["compressed_tokens"],
        method=data["method"],
        tokenizer=data["tokenizer"],
        budget=data["budget"],
        segments=_segments(data),
        timings=data.get("timings", {}),
        details={**data.get("details", {}), "elapsed_s": data.get("elapsed_s")},
    )


def to_messages_result(data: dict[str, Any]) -> MessagesResult:
    per_message: list[CompressionResult | None] = []
    for message, r in zip(data["messages"], data["per_message"]):
        if r is None:
            per_message.append(None)
            continue
        text = message["content"] if isinstance(message.get("content"), str) else ""
        per_message.append(
            CompressionResult(
                text,
                r["original_tokens"],
                r["compressed_tokens"],
                data["method"],
                data["tokenizer"],
                r["budget"],
                _segments(r),
                r.get("timings", {}),
            )
        )
    return MessagesResult(
        data["messages"], data["original_tokens"], data["compressed_tokens"], data["method"], per_message
    )


def to_passages_result(data: dict[str, Any]) -> PassagesResult:
    return PassagesResult(
        data["passages"], data["original_tokens"], data["compressed_tokens"], data["method"], to_result(data)
    )


class _Base:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.25,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.headers = {**(headers or {}), **({"x-api-key": api_key} if api_key else {})}


class PromptShrinkClient(_Base):
    """Synchronous client; use as a context manager or call `close()`."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout, headers=self.headers)

    def __enter__(self) -> PromptShrinkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> Any:
        for attempt in range(self.max_retries + 1):
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, json=json)
            except httpx.TimeoutException:
                if attempt == self.max_retries:
                    raise
            delay = _retry_delay(attempt, response, self.backoff)
            if response is not None and (delay is None or attempt == self.max_retries):
                _raise_for(response)
                return response.json()
            time.sleep(delay or 0)
        raise AssertionError("unreachable")

    def compress(
        self,
        text: str,
        method: str | None = None,
        *,
        rate: float | None = None,
        target_tokens: int | None = None,
        tokenizer: str = "cl100k_base",
        question: str | None = None,
        keep: Sequence[str] = (),
        protect_numbers: bool = False,
        seed: int = 0,
        progress: Any = None,
        include_segments: bool = False,
        **method_options: Any,
    ) -> CompressionResult:
        """Like `promptshrink.compress`; ``method=None`` uses the server's default; ``progress`` is ignored."""
        kwargs = {
            "rate": rate,
            "target_tokens": target_tokens,
            "tokenizer": tokenizer,
            "question": question,
            "keep": keep,
            "protect_numbers": protect_numbers,
            "seed": seed,
            "include_segments": include_segments,
            **method_options,
        }
        return to_result(self._request("POST", "/v1/compress", _body("text", text, method, kwargs)))

    def compress_messages(
        self,
        messages: list[dict[str, Any]],
        method: str | None = None,
        *,
        rate: float | None = None,
        target_tokens: int | None = None,
        tokenizer: str = "cl100k_base",
        roles: Sequence[str] = ("user", "assistant", "tool"),
        skip_last_user: bool = True,
        question: str | None = None,
        keep: Sequence[str] = (),
        min_tokens: int = 32,
        **options: Any,
    ) -> MessagesResult:
        """Like `promptshrink.compress_messages`."""
        kwargs = {
            "rate": rate,
            "target_tokens": target_tokens,
            "tokenizer": tokenizer,
            "roles": roles,
            "skip_last_user": skip_last_user,
            "question": question,
            "keep": keep,
            "min_tokens": min_tokens,
            **options,
        }
        return to_messages_result(self._request("POST", "/v1/compress", _body("messages", messages, method, kwargs)))

    def compress_passages(
        self,
        passages: Sequence[dict[str, Any] | str],
        question: str | None = None,
        method: str | None = None,
        *,
        rate: float | None = None,
        target_tokens: int | None = None,
        tokenizer: str = "cl100k_base",
        keep: Sequence[str] = (),
        **options: Any,
    ) -> PassagesResult:
        """Like `promptshrink.compress_passages`."""
        kwargs = {"rate": rate, "target_tokens": target_tokens, "tokenizer": tokenizer, "keep": keep, **options}
        body = _body("passages", list(passages), method, {**kwargs, "question": question})
        return to_passages_result(self._request("POST", "/v1/compress", body))

    def compress_batch(
        self, items: list[dict[str, Any]], concurrency: int | None = None
    ) -> list[CompressionResult | ServiceError]:
        """Many `/v1/compress` bodies in one call; failed items come back as `ServiceError` values."""
        data = self._request("POST", "/v1/compress/batch", _payload("items", items, None, concurrency=concurrency))
        return [_batch_item(i) for i in data["items"]]

    def methods(self) -> dict[str, Any]:
        return self._request("GET", "/v1/methods")

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200


class AsyncPromptShrinkClient(_Base):
    """Asynchronous client with the same methods as `PromptShrinkClient`, as coroutines."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, headers=self.headers)

    async def __aenter__(self) -> AsyncPromptShrinkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, json: dict[str, Any] | None = None) -> Any:
        for attempt in range(self.max_retries + 1):
            response: httpx.Response | None = None
            try:
                response = await self._http.request(method, path, json=json)
            except httpx.TimeoutException:
                if attempt == self.max_retries:
                    raise
            delay = _retry_delay(attempt, response, self.backoff)
            if response is not None and (delay is None or attempt == self.max_retries):
                _raise_for(response)
                return response.json()
            await asyncio.sleep(delay or 0)
        raise AssertionError("unreachable")

    async def compress(self, text: str, method: str | None = None, **kwargs: Any) -> CompressionResult:
        """Like `PromptShrinkClient.compress`."""
        return to_result(await self._request("POST", "/v1/compress", _body("text", text, method, kwargs)))

    async def compress_messages(
        self, messages: list[dict[str, Any]], method: str | None = None, **kwargs: Any
    ) -> MessagesResult:
        """Like `PromptShrinkClient.compress_messages`."""
        return to_messages_result(
            await self._request("POST", "/v1/compress", _body("messages", messages, method, kwargs))
        )

    async def compress_passages(
        self,
        passages: Sequence[dict[str, Any] | str],
        question: str | None = None,
        method: str | None = None,
        **kwargs: Any,
    ) -> PassagesResult:
        """Like `PromptShrinkClient.compress_passages`."""
        body = _body("passages", list(passages), method, {**kwargs, "question": question})
        return to_passages_result(await self._request("POST", "/v1/compress", body))

    async def compress_batch(
        self, items: list[dict[str, Any]], concurrency: int | None = None
    ) -> list[CompressionResult | ServiceError]:
        data = await self._request(
            "POST", "/v1/compress/batch", _payload("items", items, None, concurrency=concurrency)
        )
        return [_batch_item(i) for i in data["items"]]

    async def methods(self) -> dict[str, Any]:
        return await self._request("GET", "/v1/methods")

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200


# the body fields of `promptshrink.request.CompressOptions` plus the service's per-input ones; others are options
REQUEST_FIELDS = request_fields() | {"include_segments", "roles", "skip_last_user", "min_tokens"}


def _body(kind: str, data: Any, method: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A request body from library-style keyword arguments; unknown keywords are method options."""
    kwargs = {k: v for k, v in kwargs.items() if k != "progress"}
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k in REQUEST_FIELDS}
    options = {k: v for k, v in kwargs.items() if k not in REQUEST_FIELDS}
    return _payload(kind, data, method, options=options or None, **fields)


def _batch_item(item: dict[str, Any]) -> CompressionResult | ServiceError:
    if item["ok"]:
        return to_result(item["result"])
    return ServiceError(item.get("status", 422), item["error"]["code"], item["error"]["message"], item["error"])
