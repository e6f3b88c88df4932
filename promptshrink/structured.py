"""Compressing structured inputs: chat message lists (per message, roles kept) and RAG passages (ids kept)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .budget import Budget
from .depth import check_depth
from .errors import BudgetError, InvalidInputError
from .formats import compress_conversation
from .json_splice import json_regions
from .passages import Passage, PassageAwareCompressor, kept_per_passage
from .pipeline import plan
from .question_split import split_trailing_question
from .request import DEFAULT_METHOD, CompressOptions, check_text, check_unicode
from .result import CompressionResult, MessagesResult, PassagesResult
from .target_tokenizer import get_tokenizer

PASSAGE_SEPARATOR = "\n\n"
DEFAULT_ROLES = ("user", "assistant", "tool")


def _text_parts(message: dict[str, Any]) -> list[tuple[Any, str]]:
    """(location, text) of each text piece of an OpenAI-style message; location is None or the part index."""
    content = message.get("content")
    if isinstance(content, str):
        return [(None, content)]
    if isinstance(content, list):
        return [(i, p["text"]) for i, p in enumerate(content) if isinstance(p, dict) and p.get("type") == "text"]
    return []


def last_text(content: Any) -> tuple[int | None, str | None]:
    """(part index, or None for a string content; text) of the last text of a message's content; (None, None)
    when it has none."""
    if isinstance(content, str):
        return None, content
    if isinstance(content, list):
        for k in range(len(content) - 1, -1, -1):
            part = content[k]
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                return k, part["text"]
    return None, None


def with_text(content: Any, part: int | None, text: str) -> Any:
    """``content`` with its text (a string content) or its text part number ``part`` replaced by ``text``; the
    other parts are the same objects, in the same places."""
    if part is None:
        return text
    return [{**p, "text": text} if k == part else p for k, p in enumerate(content)]


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidInputError("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidInputError(f"messages[{i}] must be an object with a string 'role'")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidInputError(f"messages[{i}].content must be a string or a list of content parts")
        for k, part in enumerate(content if isinstance(content, list) else []):
            if not isinstance(part, dict) or (part.get("type") == "text" and not isinstance(part.get("text"), str)):
                raise InvalidInputError(
                    f"messages[{i}].content[{k}] must be an object; a text part needs a string 'text'"
                )


def compress_messages(
    messages: list[dict[str, Any]],
    method: str = DEFAULT_METHOD,
    *,
    roles: Sequence[str] = DEFAULT_ROLES,
    skip_last_user: bool = True,
    min_tokens: int = 32,
    format: str | None = None,
    **options: Any,
) -> MessagesResult:
    """Compress each message whose role is in ``roles`` (system excluded by default); roles and order are kept.

    The last user message is the query and is left alone unless ``skip_last_user`` is False; it also serves as
    the question for question-aware methods (with ``split_question``, only its trailing question is left alone
    and the context before it is compressed). Content given as a list of parts is compressed part by part: text
    parts only, every other part (images, audio, files) left as it is and where it is; in the last user message,
    only the final text part is the query (the one split with ``split_question``) and the text parts before it
    are compressed. A message with several compressed parts has `CompressionResult.merged` as its result.
    ``target_tokens`` is a total over all message texts; ``timeout_s`` bounds the whole call; the other keywords are
    those of `promptshrink.compress`. ``format`` (``openai``, ``anthropic``, ``responses``) reads the messages in
    that API's shape, shrinks tool outputs by their structure and older turns harder:
    `promptshrink.formats.compress_conversation`, whose own keywords (``parts``, ``tool_min_chars``, ``schedule``,
    ``ranges``) are accepted then.
    """
    if format is not None:
        common = {"roles": roles, "skip_last_user": skip_last_user, "min_tokens": min_tokens}
        return compress_conversation(messages, method, format=format, **common, **options)
    opts = CompressOptions.from_kwargs(method=method, **options)
    return messages_with(messages, opts, roles=roles, skip_last_user=skip_last_user, min_tokens=min_tokens)


def messages_with(
    messages: list[dict[str, Any]],
    options: CompressOptions,
    *,
    roles: Sequence[str] = DEFAULT_ROLES,
    skip_last_user: bool = True,
    min_tokens: int = 32,
) -> MessagesResult:
    """`compress_messages` with validated options."""
    check_depth(messages, "messages")
    _validate_messages(messages)
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    split, part = None, None
    if options.split_question and skip_last_user and last_user is not None:
        part, text = last_text(messages[last_user].get("content"))
        split = split_trailing_question(text, options.question_markers) if text is not None else None
    if split is not None:  # the context and the tail as two user messages; the tail is the query left alone
        at = last_user
        context = {**messages[at], "content": with_text(messages[at]["content"], part, split.context)}
        messages = [*messages[:at], context, {"role": "user", "content": split.tail}, *messages[at + 1 :]]
        last_user = at + 1
    out = copy.deepcopy(messages)
    query = _text_parts(messages[last_user])[-1:] if last_user is not None else []
    question = options.question
    if question is None and query:
        question = query[0][1].strip() or None
    pieces = [(i, loc, text) for i, m in enumerate(messages) for loc, text in _text_parts(m) if text.strip()]
    for i, _, text in pieces:
        check_unicode(f"messages[{i}].content", text)
    check_unicode("question", question or "")
    target_tokens = options.target_tokens
    target = get_tokenizer(options.tokenizer)
    counts = target.count_many([t for _, _, t in pieces])
    total = sum(counts)

    def compressible(i: int, loc: Any, n: int) -> bool:
        is_query = skip_last_user and i == last_user and (loc is None or [loc] == [q for q, _ in query])
        return messages[i]["role"] in roles and not is_query and n >= min_tokens

    movable = sum(n for (i, loc, _), n in zip(pieces, counts) if compressible(i, loc, n))
    fixed = total - movable
    if target_tokens is not None and fixed + 1 > target_tokens and movable:
        raise BudgetError(f"the messages that are not compressed already need {fixed} tokens; budget {target_tokens}")
    p = plan(options)
    chosen = [(i, loc, text, n) for (i, loc, text), n in zip(pieces, counts) if compressible(i, loc, n)]
    requests = [
        p.request(
            text,
            question=question,
            budget=Budget(target_tokens=max(1, (target_tokens - fixed) * n // movable)) if target_tokens else None,
        )
        for _, _, text, n in chosen
    ]
    parts: list[list[CompressionResult]] = [[] for _ in messages]
    for (i, loc, _, _), result in zip(chosen, p.run(requests)):
        parts[i].append(result)
        if loc is None:
            out[i]["content"] = result.text
        else:
            out[i]["content"][loc]["text"] = result.text
    per_message = [None if not r else r[0] if len(r) == 1 else CompressionResult.merged(r) for r in parts]
    if split is not None:  # join the context and the tail again
        content = out[at]["content"]
        joined = {**out[at], "content": with_text(content, part, last_text(content)[1] + split.tail)}
        out = [*out[:at], joined, *out[at + 2 :]]
        per_message = [*per_message[: at + 1], *per_message[at + 2 :]]
    compressed = sum(target.count_many([t for m in out for _, t in _text_parts(m) if t.strip()]))
    return MessagesResult(out, total, compressed, options.method_name, per_message)


def compress_passages(
    passages: Sequence[dict[str, Any] | str],
    question: str | None = None,
    method: str = DEFAULT_METHOD,
    **options: Any,
) -> PassagesResult:
    """Compress retrieved passages under one shared budget; ids and metadata go through unchanged.

    Passages are joined with blank lines, compressed together (so the budget is global and a method can
    prefer the relevant passages), and each passage gets exactly the kept text that lies inside it (all of it when
    nothing needs dropping). The other
    keywords are those of `promptshrink.compress`.
    """
    return passages_with(passages, CompressOptions.from_kwargs(method=method, question=question, **options))


def passages_with(passages: Sequence[dict[str, Any] | str], options: CompressOptions) -> PassagesResult:
    """`compress_passages` with validated options."""
    if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence) or not passages:
        raise InvalidInputError("passages must be a non-empty list of strings or {id, text, metadata} objects")
    check_depth(passages, "passages")
    items = []
    for i, p in enumerate(passages):
        if isinstance(p, str):
            p = {"id": str(i), "text": p}
        if not isinstance(p, dict) or not isinstance(p.get("text"), str):
            raise InvalidInputError(f"passages[{i}] must be a string or an object with a string 'text'")
        items.append({"id": str(p.get("id", i)), "text": p["text"].strip(), "metadata": p.get("metadata") or {}})
    spans, cursor = [], 0
    for item in items:
        spans.append((cursor, cursor + len(item["text"])))
        cursor += len(item["text"]) + len(PASSAGE_SEPARATOR)
    joined = check_text(PASSAGE_SEPARATOR.join(item["text"] for item in items))
    p = plan(options)
    request = p.request(joined)
    if isinstance(p.compressor, PassageAwareCompressor) and not json_regions(joined):
        given = [Passage(it["id"], it["text"], s, e, it["metadata"]) for it, (s, e) in zip(items, spans)]
        with p.on_device():
            result = p.compressor.compress_passages(request.question, given, request)
    else:  # JSON goes through the string-value splicer, as in `compress`
        result = p.run([request])[0]
    out = [
        {**item, "text": text, "kept": bool(text), "original_text": item["text"]}
        for item, text in zip(items, kept_per_passage(result.segments, spans))
    ]
    return PassagesResult(out, result.original_tokens, result.compressed_tokens, result.method, result)
