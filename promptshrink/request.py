"""`CompressOptions`: how to compress, one frozen value validated once, shared by every entry point.

The library's keyword functions (`promptshrink.compress` and friends), the service's request bodies, the client
and the CLI are all derived from the fields of `CompressOptions`: **adding an option is adding one field here**
(with its ``metadata``: ``doc``, and where it differs from the defaults ``wire``, ``cli``, ``schema``). A field
reaches the compressor as ``request.options.<name>`` (`promptshrink.methods.base.CompressionRequest`).

Field metadata:
    doc: One line for the service schema, the client and ``--help``.
    wire: Whether an HTTP request may set it (default True); the server decides the others (device, time limit).
    cli: Extra command-line names (e.g. ``("-r",)``), or False for no flag (default: ``--<name-with-dashes>``).
    schema: Extra pydantic ``Field`` constraints of the service body (``gt``, ``le``, ``max_length``...).
    group: Flags in the same group are mutually exclusive on the command line (the budget).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .budget import Budget, make_budget
from .errors import InvalidInputError
from .params import flag
from .question_split import DEFAULT_QUESTION_MARKERS
from .target_tokenizer import DEFAULT_TOKENIZER

DEFAULT_METHOD = "auto"
SEED_MAX = 2**32 - 1
MAX_MARKERS, MAX_MARKER_CHARS = 32, 64
ProgressFn = Callable[[int, int], None]


def _meta(doc: str, **more: Any) -> dict[str, Any]:
    return {"doc": doc, **more}


@dataclass(frozen=True)
class CompressOptions:
    """Everything about a compression call except its input; checked on construction (`InvalidInputError`)."""

    method: str | None = field(
        default=None, metadata=_meta(f"compression method; default: {DEFAULT_METHOD} (a server's own)", cli=("-m",))
    )
    rate: float | None = field(
        default=None,
        metadata=_meta("kept fraction of target tokens, in (0, 1]", cli=("-r",), schema={"gt": 0, "le": 1}, group=1),
    )
    target_tokens: int | None = field(
        default=None,
        metadata=_meta("most target tokens to keep", cli=("-t",), schema={"gt": 0}, group=1),
    )
    tokenizer: str = field(
        default=DEFAULT_TOKENIZER, metadata=_meta("the target LLM's tokenizer: tiktoken encoding, OpenAI model, hf:id")
    )
    question: str | None = field(
        default=None, metadata=_meta("question the compressed context must answer", cli=("-q",))
    )
    keep: tuple[str, ...] = field(default=(), metadata=_meta("strings that must survive", cli=("-k",)))
    protect_numbers: bool = field(default=False, metadata=_meta("never drop numbers"))
    seed: int = field(default=0, metadata=_meta("seed of randomised methods", schema={"ge": 0, "le": SEED_MAX}))
    split_question: bool = field(
        default=False,
        metadata=_meta(
            "keep a trailing question/instruction verbatim (of the text, or of the final user message) and "
            "compress the context before it for that question"
        ),
    )
    question_markers: tuple[str, ...] = field(
        default=DEFAULT_QUESTION_MARKERS,
        metadata=_meta("what opens that trailing question", cli=False, schema={"max_length": MAX_MARKERS}),
    )
    timeout_s: float | None = field(
        default=None, metadata=_meta("stop with CompressionTimeoutError after this many seconds", wire=False)
    )
    device: str | None = field(
        default=None, metadata=_meta("where LM-scored methods run: auto, cpu, cuda, cuda:N", wire=False)
    )
    progress: ProgressFn | None = field(
        default=None, compare=False, metadata=_meta("called with (done, total) between windows", wire=False, cli=False)
    )
    options: Mapping[str, Any] = field(
        default_factory=dict, metadata=_meta("method options (see describe_methods)", cli=False)
    )

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.method is not None and not isinstance(self.method, str):
            raise InvalidInputError(f"method must be a string, got {type(self.method).__name__}")
        make_budget(self.rate, self.target_tokens)
        if not isinstance(self.tokenizer, str):
            raise InvalidInputError(f"tokenizer must be a string, got {type(self.tokenizer).__name__}")
        if self.question is not None:
            if not isinstance(self.question, str):
                raise InvalidInputError("question must be a string")
            check_unicode("question", self.question)
            put("question", self.question.strip() or None)
        put("keep", strings("keep", self.keep))
        for k in self.keep:
            check_unicode("keep", k)
        flag("protect_numbers", self.protect_numbers)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidInputError("seed must be an integer")
        flag("split_question", self.split_question)
        markers = strings("question_markers", self.question_markers)
        if len(markers) > MAX_MARKERS or any(len(m) > MAX_MARKER_CHARS for m in markers):
            raise InvalidInputError(f"question_markers: at most {MAX_MARKERS}, each at most {MAX_MARKER_CHARS} chars")
        put("question_markers", markers)
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, (int, float))
            or not self.timeout_s > 0
            or math.isnan(self.timeout_s)
        ):
            raise InvalidInputError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if self.device is not None and not isinstance(self.device, str):
            raise InvalidInputError("device must be a string such as 'cpu' or 'cuda'")
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            raise InvalidInputError("method options must be a mapping of names to values")
        put("options", MappingProxyType(dict(self.options)))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> CompressOptions:
        """Library-style keywords: the fields by name, every other keyword a method option."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in kwargs.items() if k in names}
        extra = {k: v for k, v in kwargs.items() if k not in names}
        if extra:
            given["options"] = {**given.get("options", {}), **extra}
        return cls(**given)

    @property
    def budget(self) -> Budget:
        return make_budget(self.rate, self.target_tokens)

    @property
    def method_name(self) -> str:
        """The method to run (``method``, else the library default)."""
        return self.method or DEFAULT_METHOD

    def replace(self, **changes: Any) -> CompressOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def key(self) -> tuple[Any, ...]:
        """A hashable identity of these options (``progress`` left out): equal keys compress alike."""
        return tuple(
            (f.name, tuple(sorted(self.options.items())) if f.name == "options" else getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.compare
        )

    def deadline(self) -> float | None:
        """The `time.monotonic()` deadline ``timeout_s`` from now (None: no limit)."""
        return None if self.timeout_s is None else time.monotonic() + self.timeout_s


def wire_fields(cls: type[CompressOptions] = CompressOptions) -> Iterator[dataclasses.Field[Any]]:
    """The fields an HTTP request may set (the service's body and the client's keywords)."""
    return (f for f in dataclasses.fields(cls) if f.metadata.get("wire", True))


def request_fields(cls: type[CompressOptions] = CompressOptions) -> frozenset[str]:
    """Names of the wire fields other than ``method`` and ``options`` (the client sends them as they are)."""
    return frozenset(f.name for f in wire_fields(cls)) - {"method", "options"}


def strings(name: str, value: Any) -> tuple[str, ...]:
    """``value`` (a list of strings) as a tuple without empty strings."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{name} must be a list of strings")
    return tuple(v for v in value if v)


def check_text(text: Any, name: str = "text") -> str:
    """``text`` if it is a non-empty string of valid Unicode."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError(f"{name} is empty: nothing to compress")
    check_unicode(name, text)
    return text


def check_unicode(name: str, value: str) -> None:
    """Refuse lone surrogates (e.g. a JSON ``"\\ud800"``): no tokenizer or UTF-8 encoder accepts them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{name} holds an unpaired UTF-16 surrogate {value[exc.start]!r} at character {exc.start}; "
            "send valid Unicode (pair the surrogates or drop that character)"
        ) from None
