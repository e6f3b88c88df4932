"""Conversations in the three LLM API shapes: OpenAI chat, Anthropic Messages and OpenAI Responses.

`compress_conversation` (also `compress_messages(..., format=...)`) finds the compressible text in a message list
of one of the shapes, compresses it in place on a copy, and leaves every other field as it was:

- ``openai``: ``messages`` with ``content`` a string or parts; ``type: text`` parts are text, ``role: tool``
  messages are tool outputs.
- ``anthropic``: ``messages`` (``system`` is a separate field and not passed here); ``text`` blocks are text,
  ``tool_result`` blocks (string or text-block content) are tool outputs; ``image``, ``document``, ``tool_use``,
  ``thinking`` blocks, ``cache_control`` and unknown fields are left alone.
- ``responses``: ``input`` as a string or items; ``message`` items (``input_text``/``output_text`` parts, or a
  string) are text, ``function_call_output`` items are tool outputs; ``reasoning`` and other items are left alone.

The question for relevance is the text of the latest user turn, which is itself left alone (``skip_last_user``).
Tool outputs of at least ``tool_min_chars`` characters go through `promptshrink.tool_output` (JSON stays valid,
logs lose repeats, code keeps signatures). Older turns are compressed harder by ``schedule``: a piece with
``age`` newer user turns after it keeps ``rate * factor`` for the last ``(age_from, factor)`` whose ``age_from``
is at most its age. ``ranges`` (Kong's compression ranges) give the rate by the piece's token count instead;
pieces outside every range are left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .budget import Budget
from .errors import BudgetError, InvalidInputError
from .pipeline import plan
from .question_split import split_trailing_question
from .request import DEFAULT_METHOD, CompressOptions, check_unicode
from .result import CompressionResult, MessagesResult
from .tool_output import shrink_tool_output

FORMATS = ("openai", "anthropic", "responses")
# Measured with benchmarks/proxy_overhead.py (tool_threshold, docs/proxy.md): at rate 0.5 a tool output under
# ~500 characters saves 0-100 tokens, from ~550 on 110-230; LiteLLM's guardrail uses the same default.
TOOL_MIN_CHARS = 500
DEFAULT_SCHEDULE: tuple[tuple[int, float], ...] = ((0, 1.0), (3, 0.75), (8, 0.5))
MIN_RATE = 0.05
_RESPONSES_TEXT = ("input_text", "output_text", "text")


@dataclass
class Piece:
    """One compressible string of a conversation and how to write it back."""

    at: int  # index of the message (item) it belongs to
    role: str  # the role the policy sees: a tool output is ``tool`` whatever its message's role
    part: str  # the part type the policy sees: text, tool, tool_result, function_call_output
    text: str
    put: Callable[[str], None]

    @property
    def tool(self) -> bool:
        return self.part != "text"


def _setter(holder: Any, key: Any) -> Callable[[str], None]:
    def put(value: str) -> None:
        holder[key] = value

    return put


def _pieces_of_content(at: int, role: str, part: str, holder: Any, key: Any, text_types: Sequence[str]) -> list[Piece]:
    """Pieces of ``holder[key]``: itself when a string, else its parts whose type is in ``text_types``."""
    content = holder[key]
    if isinstance(content, str):
        return [Piece(at, role, part, content, _setter(holder, key))]
    if not isinstance(content, list):
        return []
    return [
        Piece(at, role, part, p["text"], _setter(p, "text"))
        for p in content
        if isinstance(p, dict) and p.get("type") in text_types and isinstance(p.get("text"), str)
    ]


def _openai(messages: list[Any]) -> list[Piece]:
    out = []
    for i, m in enumerate(messages):
        if "content" in m:
            tool = m["role"] == "tool"
            out += _pieces_of_content(i, m["role"], "tool" if tool else "text", m, "content", ("text",))
    return out


def _anthropic(messages: list[Any]) -> list[Piece]:
    out = []
    for i, m in enumerate(messages):
        out += _pieces_of_content(i, m["role"], "text", m, "content", ("text",))
        for block in m.get("content") if isinstance(m.get("content"), list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result" and "content" in block:
                out += _pieces_of_content(i, "tool", "tool_result", block, "content", ("text",))
    return out


def _responses(items: list[Any]) -> list[Piece]:
    out = []
    for i, item in enumerate(items):
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message" and "content" in item:
            out += _pieces_of_content(i, str(item.get("role")), "text", item, "content", _RESPONSES_TEXT)
        elif kind == "function_call_output" and "output" in item:
            out += _pieces_of_content(i, "tool", "function_call_output", item, "output", _RESPONSES_TEXT)
    return out


def _validate(messages: Any, format: str) -> None:
    if format not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "responses" and isinstance(messages, str):
        return
    if not isinstance(messages, list) or not messages:
        what = "input items" if format == "responses" else "{role, content} messages"
        raise InvalidInputError(f"{format} messages must be a non-empty list of {what}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidInputError(f"messages[{i}] must be an object")
        if format != "responses" and not isinstance(m.get("role"), str):
            raise InvalidInputError(f"messages[{i}] must have a string 'role'")
        content = m.get("content")
        if format != "responses" and content is not None and not isinstance(content, (str, list)):
            raise InvalidInputError(f"messages[{i}].content must be a string or a list of content parts")


def _factor(age: int, schedule: Sequence[tuple[int, float]]) -> float:
    """The factor of the last schedule step whose ``age_from`` is at most ``age`` (1.0 before the first)."""
    return next((f for a, f in sorted(schedule, reverse=True) if a <= age), 1.0)


def range_rate(n: int, ranges: Sequence[tuple[int, int, float]]) -> float | None:
    """The rate of the first ``(min_tokens, max_tokens, rate)`` range holding ``n`` tokens; None: outside all."""
    return next((rate for low, high, rate in ranges if low <= n < high), None)


def compress_conversation(
    messages: list[dict[str, Any]] | str,
    method: str = DEFAULT_METHOD,
    *,
    format: str = "openai",
    roles: Sequence[str] = ("user", "assistant", "tool"),
    parts: Sequence[str] | None = None,
    skip_last_user: bool = True,
    min_tokens: int = 32,
    tool_min_chars: int = TOOL_MIN_CHARS,
    schedule: Sequence[tuple[int, float]] = DEFAULT_SCHEDULE,
    ranges: Sequence[tuple[int, int, float]] | None = None,
    **options: Any,
) -> MessagesResult:
    """Compress the text and tool outputs of a conversation in ``format``; everything else is kept as it was.

    Parameters: ``roles`` and ``parts`` (text, tool, tool_result, function_call_output; None: all) select what
    is compressed; text under ``min_tokens`` tokens and tool outputs under ``tool_min_chars`` characters are left
    alone; the budget (``rate``/``target_tokens``, the latter a total over all pieces) is scaled by ``schedule``
    for older turns; ``ranges`` ``(min_tokens, max_tokens, rate)`` replaces the rate by size. Other keywords
    are those of `promptshrink.compress` (``split_question`` splits the latest user text). A Responses
    ``input`` string comes back as a string.
    """
    opts = CompressOptions.from_kwargs(method=method, **options)
    _validate(messages, format)
    box: dict[str, Any] = {"input": copy.deepcopy(messages)}
    pieces = _pieces(box, format)
    user_turns = sorted({p.at for p in pieces if p.role == "user" and not p.tool})
    last_user = user_turns[-1] if user_turns else None
    query = [i for i, p in enumerate(pieces) if skip_last_user and p.at == last_user and not p.tool]
    question = opts.question
    if question is None and last_user is not None:
        question = " ".join(p.text for p in pieces if p.at == last_user and not p.tool).strip() or None
    one = opts.split_question and len(query) == 1
    split = split_trailing_question(pieces[query[0]].text, opts.question_markers) if one else None
    if split is not None:  # the context before the trailing question is compressible
        whole = pieces[query[0]]
        pieces[query[0]] = Piece(whole.at, "user", "text", split.context, lambda t, w=whole, s=split: w.put(t + s.tail))
        pieces.append(Piece(whole.at, "user", "text", split.tail, lambda _: None))
        query = [len(pieces) - 1]
        question = opts.question or split.question
    for p in pieces:
        check_unicode(f"messages[{p.at}]", p.text)
    check_unicode("question", question or "")
    run = plan(opts)
    target, target_tokens, budget = run.tokenizer, opts.target_tokens, opts.budget
    counts = target.count_many([p.text for p in pieces])

    def rate_of(k: int, p: Piece, n: int) -> float | None:
        """The kept fraction for ``p`` (None: leave it alone)."""
        if k in query or p.role not in roles or (parts is not None and p.part not in parts) or not p.text.strip():
            return None
        if (len(p.text) < tool_min_chars) if p.tool else (n < min_tokens):
            return None
        base = range_rate(n, ranges) if ranges is not None else budget.rate if budget.rate is not None else 1.0
        if base is None:
            return None
        age = sum(1 for t in user_turns if t > p.at)
        return max(MIN_RATE, min(1.0, base * _factor(age, schedule)))

    rates = [rate_of(k, p, n) for k, (p, n) in enumerate(zip(pieces, counts))]
    weight = sum(n * r for n, r in zip(counts, rates) if r is not None)
    fixed = sum(n for n, r in zip(counts, rates) if r is None)
    if target_tokens is not None and ranges is None and weight and fixed + 1 > target_tokens:
        raise BudgetError(f"the messages that are not compressed already need {fixed} tokens; budget {target_tokens}")

    def method_run(text: str, limit: int) -> CompressionResult:
        return run.run([run.request(text, question=question, budget=Budget(target_tokens=limit))])[0]

    per_message: list[CompressionResult | None] = [None] * (len(messages) if isinstance(messages, list) else 1)
    texts: list[tuple[Piece, int]] = []
    for p, n, r in zip(pieces, counts, rates):
        if r is None:
            continue
        by_target = target_tokens is not None and ranges is None
        limit = max(1, int((target_tokens - fixed) * n * r / weight)) if by_target else max(1, int(n * r))
        if limit >= n:
            continue
        if not p.tool:
            texts.append((p, limit))
            continue
        text, shape = shrink_tool_output(p.text, limit, target, question, lambda t, k: method_run(t, k).text)
        result = CompressionResult(text, n, target.count(text), run.method, target.name, f"target_tokens={limit}")
        result.details["shape"] = shape
        p.put(text)
        per_message[p.at] = result
    requests = [run.request(p.text, question=question, budget=Budget(target_tokens=k)) for p, k in texts]
    for (p, _), result in zip(texts, run.run(requests)):
        p.put(result.text)
        per_message[p.at] = result
    total = sum(counts)
    compressed = sum(target.count_many([p.text for p in _pieces(box, format)]))
    return MessagesResult(box["input"], total, compressed, run.method, per_message)


def _pieces(box: dict[str, Any], format: str) -> list[Piece]:
    """The pieces of the conversation in ``box['input']`` (a Responses string input is one user piece)."""
    if isinstance(box["input"], str):
        return [Piece(0, "user", "text", box["input"], _setter(box, "input"))]
    return {"openai": _openai, "anthropic": _anthropic, "responses": _responses}[format](box["input"])
