"""Compressing structured inputs: chat message lists (per message, roles kept) and RAG passages (ids kept)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .api import DEFAULT_METHOD, build_request, check_unicode, deadline_after, get_compressor
from .budget import Budget, make_budget
from .errors import BudgetError, InvalidInputError
from .json_splice import compress_request
from .methods.base import CompressionRequest
from .model_loading import use_device
from .passages import Passage, PassageAwareCompressor, kept_per_passage
from .result import CompressionResult, MessagesResult, PassagesResult
from .target_tokenizer import DEFAULT_TOKENIZER, get_tokenizer

PASSAGE_SEPARATOR = "\n\n"


def _text_parts(message: dict[str, Any]) -> list[tuple[Any, str]]:
    """(location, text) of each text piece of an OpenAI-style message; location is None or the part index."""
    content = message.get("content")
    if isinstance(content, str):
        return [(None, content)]
    if isinstance(content, list):
        return [(i, p["text"]) for i, p in enumerate(content) if isinstance(p, dict) and p.get("type") == "text"]
    return []


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
    rate: float | None = None,
    target_tokens: int | None = None,
    tokenizer: str = DEFAULT_TOKENIZER,
    roles: Sequence[str] = ("user", "assistant", "tool"),
    skip_last_user: bool = True,
    question: str | None = None,
    keep: Sequence[str] = (),
    min_tokens: int = 32,
    device: str | None = None,
    timeout_s: float | None = None,
    **options: Any,
) -> MessagesResult:
    """Compress each message whose role is in ``roles`` (system excluded by default); roles and order are kept.

    The last user message is the query and is left alone unless ``skip_last_user`` is False; it also serves as
    the question for question-aware methods. Content given as a list of parts is compressed part by part: text
    parts only, every other part (images, audio, files) left as it is and where it is; in a last user message
    with several text parts, only its final text part is the query and the parts before it are compressed (the
    per-message result then sums the parts, see `CompressionResult.merged`). ``target_tokens`` is a total over
    all message texts; ``timeout_s`` bounds the whole call and ``device`` is as in `promptshrink.compress`.
    """
    deadline = deadline_after(timeout_s)
    _validate_messages(messages)
    out = copy.deepcopy(messages)
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    query = _text_parts(messages[last_user])[-1:] if last_user is not None else []
    if question is None and query:
        question = query[0][1].strip() or None
    pieces = [(i, loc, text) for i, m in enumerate(messages) for loc, text in _text_parts(m) if text.strip()]
    for i, _, text in pieces:
        check_unicode(f"messages[{i}].content", text)
    check_unicode("question", question or "")
    budget, target = make_budget(rate, target_tokens), get_tokenizer(tokenizer)
    counts = target.count_many([t for _, _, t in pieces])
    total = sum(counts)

    def compressible(i: int, loc: Any, n: int) -> bool:
        is_query = skip_last_user and i == last_user and (loc is None or [loc] == [q for q, _ in query])
        return messages[i]["role"] in roles and not is_query and n >= min_tokens

    movable = sum(n for (i, loc, _), n in zip(pieces, counts) if compressible(i, loc, n))
    fixed = total - movable
    if target_tokens is not None and fixed + 1 > target_tokens and movable:
        raise BudgetError(f"the messages that are not compressed already need {fixed} tokens; budget {target_tokens}")
    compressor = get_compressor(method, **options)
    parts: list[list[CompressionResult]] = [[] for _ in messages]
    for (i, loc, text), n in zip(pieces, counts):
        if not compressible(i, loc, n):
            continue
        share = Budget(target_tokens=max(1, (target_tokens - fixed) * n // movable)) if target_tokens else budget
        request = CompressionRequest(text, share, target, question, tuple(keep), deadline=deadline)
        with use_device(device):
            result = compress_request(compressor, request)
        parts[i].append(result)
        if loc is None:
            out[i]["content"] = result.text
        else:
            out[i]["content"][loc]["text"] = result.text
    compressed = sum(target.count_many([t for m in out for _, t in _text_parts(m) if t.strip()]))
    per_message = [None if not r else r[0] if len(r) == 1 else CompressionResult.merged(r) for r in parts]
    return MessagesResult(out, total, compressed, method, per_message)


def compress_passages(
    passages: Sequence[dict[str, Any] | str],
    question: str | None = None,
    method: str = "tfidf",
    *,
    rate: float | None = None,
    target_tokens: int | None = None,
    tokenizer: str = DEFAULT_TOKENIZER,
    keep: Sequence[str] = (),
    device: str | None = None,
    timeout_s: float | None = None,
    **options: Any,
) -> PassagesResult:
    """Compress retrieved passages under one shared budget; ids and metadata go through unchanged.

    Passages are joined with blank lines, compressed together (so the budget is global and a method can
    prefer the relevant passages), and the kept pieces are mapped back to the passage they came from. ``device``
    as in `promptshrink.compress`.
    """
    if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence) or not passages:
        raise InvalidInputError("passages must be a non-empty list of strings or {id, text, metadata} objects")
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
    joined = PASSAGE_SEPARATOR.join(item["text"] for item in items)
    request = build_request(
        joined,
        rate=rate,
        target_tokens=target_tokens,
        tokenizer=tokenizer,
        question=question,
        keep=keep,
        timeout_s=timeout_s,
    )
    compressor = get_compressor(method, **options)
    with use_device(device):
        if isinstance(compressor, PassageAwareCompressor):
            given = [Passage(it["id"], it["text"], s, e, it["metadata"]) for it, (s, e) in zip(items, spans)]
            result = compressor.compress_passages(request.question, given, request)
        else:
            result = compressor.compress(request)
    out = [
        {**item, "text": text, "kept": bool(text), "original_text": item["text"]}
        for item, text in zip(items, kept_per_passage(result.segments, spans))
    ]
    return PassagesResult(out, result.original_tokens, result.compressed_tokens, result.method, result)
