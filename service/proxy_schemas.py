"""The proxy's request bodies in the OpenAPI schema: the fields the proxy reads, every other field passed on.

They describe and check the shape (so generated clients and schema-based fuzzers can send valid requests); the
body forwarded upstream is the one the caller sent, minus the ``promptshrink`` policy field.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .policy import GatewayOptions
from .proxy import ProxyPolicy
from .schemas import Message

POLICY = "per-request compression policy (removed before forwarding); X-PromptShrink-* headers set the same"


class RoutePolicy(ProxyPolicy, GatewayOptions):
    """The ``promptshrink`` body field: a `ProxyPolicy` and the route policy's own fields (parts, ranges...)."""


class _Forwarded(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(description="the upstream model; also picks the tokenizer that budgets are counted in")
    stream: bool | None = Field(None, description="relay the answer as server-sent events")
    promptshrink: RoutePolicy | None = Field(None, description=POLICY)


class ChatCompletionsBody(_Forwarded):
    """An OpenAI chat completions request; fields not listed here go upstream unchanged."""

    messages: list[Message] = Field(min_length=1)


class CompletionsBody(_Forwarded):
    """An OpenAI legacy completions request; fields not listed here go upstream unchanged."""

    prompt: str | list[str] | list[int] | list[list[int]]
