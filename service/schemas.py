"""Request and response bodies of the compression endpoints (they make the OpenAPI schema)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, create_model

from promptshrink.request import CompressOptions as LibraryOptions
from promptshrink.request import wire_fields

from .errors import ErrorDetail


class Message(BaseModel):
    """An OpenAI-style chat message; fields other than role and content pass through unchanged."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class Passage(BaseModel):
    id: str | None = None
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


def options_model(cls: type[LibraryOptions] = LibraryOptions, name: str = "CompressOptions") -> type[BaseModel]:
    """The request-body model of the wire fields of ``cls`` (`promptshrink.request.CompressOptions`): one field
    each, with its description and constraints, so an option added there is accepted here. Numbers are strict
    (`_strict_numbers`)."""
    hints = get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in wire_fields(cls):
        annotation = hints[f.name]
        if get_origin(annotation) is Mapping:
            annotation = dict[str, Any]
        default = {"default_factory": f.default_factory} if f.default is MISSING else {"default": f.default}
        schema = {**_strict_numbers(annotation), **f.metadata.get("schema", {})}
        fields[f.name] = (annotation, Field(**default, description=f.metadata["doc"], **schema))
    doc = "How to compress: method, budget (rate or target_tokens) in the target tokenizer, what must survive."
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields)


def _strict_numbers(annotation: Any) -> dict[str, Any]:
    """Constraints that make a numeric field strict: a string, a boolean or NaN is refused, not coerced
    ("0.5", true -> 1); none for other fields."""
    kinds = {a for a in get_args(annotation) or (annotation,) if a is not type(None)}
    if kinds == {float}:
        return {"strict": True, "allow_inf_nan": False}
    return {"strict": True} if kinds == {int} else {}


CompressOptions = options_model()


class _Compress(CompressOptions):  # type: ignore[misc,valid-type]
    include_segments: bool = Field(False, description="return the per-segment keep/drop decisions")


class TextRequest(_Compress):
    """Compress one text (with an optional ``question``)."""

    text: str


class MessagesRequest(_Compress):
    """Compress a chat message list; roles and order are kept."""

    messages: list[Message] = Field(min_length=1)
    roles: list[str] = Field(default_factory=lambda: ["user", "assistant", "tool"], description="roles to compress")
    skip_last_user: bool = Field(True, description="leave the final user query alone")
    min_tokens: int = Field(32, ge=0, description="shorter messages are left alone")


class PassagesRequest(_Compress):
    """Compress RAG passages for a ``question``; ids and metadata are kept."""

    passages: list[str | Passage] = Field(min_length=1)


INPUTS = ("text", "messages", "passages")


def _input_kind(value: Any) -> str | None:
    """The one input field a body has (None when it has none or several: pydantic then answers 422)."""
    has = value.__contains__ if isinstance(value, dict) else lambda n: hasattr(value, n)
    given = [n for n in INPUTS if has(n)]
    return given[0] if len(given) == 1 else None


CompressRequest = Annotated[
    Annotated[TextRequest, Tag("text")]
    | Annotated[MessagesRequest, Tag("messages")]
    | Annotated[PassagesRequest, Tag("passages")],
    Discriminator(
        _input_kind,
        custom_error_type="one_input",
        custom_error_message="give exactly one of text, messages or passages",
    ),
]
"""Exactly one of ``text``, ``messages`` or ``passages``: a tagged union, so the OpenAPI schema says so (oneOf)."""


class Segment(BaseModel):
    text: str
    start: int
    end: int
    score: float | None = None
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
    allowed_methods: list[str] = Field(description="the methods requests may use on this server")
    allowed_options: list[str]


class Health(BaseModel):
    status: str
    method: str
    detail: str | None = None
    loaded: list[str] | None = Field(None, description="readyz: the methods whose models are warmed up")
