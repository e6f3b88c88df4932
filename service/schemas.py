"""Request and response bodies of the compression endpoints (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SEED_MAX = 2**32 - 1


class Message(BaseModel):
    """An OpenAI-style chat message; fields other than role and content pass through unchanged."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class Passage(BaseModel):
    id: str | None = None
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class CompressOptions(BaseModel):
    """How to compress: method, budget (rate or target_tokens) in the target tokenizer, what must survive."""

    model_config = ConfigDict(extra="forbid")
    method: str | None = Field(None, description="compression method; default: the server's")
    rate: float | None = Field(None, gt=0, le=1, description="kept fraction of target tokens")
    target_tokens: int | None = Field(None, gt=0, description="most target tokens to keep")
    tokenizer: str = Field("cl100k_base", description="tiktoken encoding or OpenAI model name")
    question: str | None = None
    keep: list[str] = Field(default_factory=list, description="strings that must survive")
    protect_numbers: bool = False
    seed: int = Field(0, ge=0, le=SEED_MAX)
    options: dict[str, Any] = Field(default_factory=dict, description="method options the server allows")


class CompressRequest(CompressOptions):
    """Exactly one of ``text``, ``messages`` or ``passages`` (with an optional ``question``)."""

    text: str | None = None
    messages: list[Message] | None = None
    passages: list[str | Passage] | None = None
    roles: list[str] = Field(default_factory=lambda: ["user", "assistant", "tool"], description="messages only")
    skip_last_user: bool = Field(True, description="messages only: leave the final user query alone")
    min_tokens: int = Field(32, ge=0, description="messages only: shorter messages are left alone")
    include_segments: bool = Field(False, description="return the per-segment keep/drop decisions")

    @model_validator(mode="after")
    def _one_input(self) -> CompressRequest:
        given = [n for n in ("text", "messages", "passages") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, messages or passages (got {', '.join(given) or 'none'})")
        return self


class Segment(BaseModel):
    text: str
    start: int
    end: int
    score: float | None
    kept: bool
    forced: bool = False
    rewritten: str | None = None


class MessageResult(BaseModel):
    """The compression of one chat message (null in ``per_message`` for messages left alone)."""

    original_tokens: int
    compressed_tokens: int
    budget: str
    timings: dict[str, float]
    segments: list[Segment] | None = None


class PassageResult(BaseModel):
    id: str
    text: str
    metadata: dict[str, Any]
    kept: bool
    original_text: str


class CompressResponse(BaseModel):
    kind: Literal["text", "messages", "passages"]
    method: str
    tokenizer: str
    original_tokens: int
    compressed_tokens: int
    tokens_saved: int
    ratio: float = Field(description="compressed / original tokens")
    budget: str
    text: str | None = Field(None, description="text and passages: the compressed text")
    messages: list[dict[str, Any]] | None = None
    per_message: list[MessageResult | None] | None = None
    passages: list[PassageResult] | None = None
    segments: list[Segment] | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    elapsed_s: float = Field(description="server time for this item, queueing included")


class BatchRequest(BaseModel):
    items: list[CompressRequest] = Field(min_length=1)
    concurrency: int | None = Field(None, ge=1, description="most items compressed at once (capped by the server)")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class BatchItem(BaseModel):
    ok: bool
    result: CompressResponse | None = None
    error: ErrorDetail | None = None
    status: int = 200


class BatchResponse(BaseModel):
    items: list[BatchItem]
    elapsed_s: float


class MethodInfo(BaseModel):
    name: str
    summary: str
    extractive: bool
    uses_question: bool
    parameters: list[dict[str, Any]]


class MethodsResponse(BaseModel):
    default: str
    methods: list[MethodInfo]
    allowed_options: list[str]


class Health(BaseModel):
    status: str
    method: str
    detail: str | None = None
