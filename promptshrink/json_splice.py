"""JSON safety: JSON is compressed only inside long string values, so the result still parses.

JSON is handled by splicing: string literals are located in the original text, the long *values* (never keys)
are compressed one by one by the chosen method and re-encoded with `json.dumps`, and everything else (keys,
numbers, booleans, punctuation, whitespace) is copied byte for byte, so the result still parses.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .budget import Budget
from .errors import BudgetError
from .result import CompressionResult, SegmentDecision

if TYPE_CHECKING:
    from .methods.base import CompressionRequest, Compressor

_FENCED_JSON = re.compile(r"```(?:json|JSON)[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
MIN_STRING_TOKENS = 16


def json_regions(text: str) -> list[tuple[int, int]]:
    """Spans of JSON documents: the whole text when it is a JSON object/array, else fenced ```json bodies."""
    stripped = text.strip()
    if stripped[:1] in "[{" and _parses(stripped):
        start = text.index(stripped[0])
        return [(start, start + len(stripped))]
    return [(m.start(1), m.end(1)) for m in _FENCED_JSON.finditer(text) if _parses(m.group(1))]


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class StringValue:
    """A JSON string literal that is a value (not a key): its span and decoded content."""

    start: int
    end: int
    value: str


def string_values(text: str, region: tuple[int, int]) -> list[StringValue]:
    """String literals inside ``region`` that are values, i.e. not followed by ':' (which makes them keys)."""
    out = []
    for m in _STRING.finditer(text, region[0], region[1]):
        after = text[m.end() : region[1]].lstrip()
        if not after.startswith(":"):
            out.append(StringValue(m.start(), m.end(), json.loads(m.group())))
    return out


def compress_request(compressor: Compressor, request: CompressionRequest) -> CompressionResult:
    """Run ``compressor`` on ``request``, routing JSON inputs through the string-value splicer."""
    regions = json_regions(request.text)
    if not regions:
        return compressor.compress(request)
    return _compress_json(compressor, request, regions)


def _compress_json(
    compressor: Compressor, request: CompressionRequest, regions: list[tuple[int, int]]
) -> CompressionResult:
    """Compress long string values; for fenced JSON inside prose, compress the prose afterwards (blocks protected)."""
    start = time.perf_counter()
    tok = request.tokenizer
    text: str = request.text
    original = tok.count(text)
    limit = request.budget.limit(original)
    whole = regions == [(len(text) - len(text.lstrip()), len(text.rstrip()))]
    values = [v for r in regions for v in string_values(text, r)]
    counts = tok.count_many([v.value for v in values])
    long_values = [(v, n) for v, n in zip(values, counts) if n >= MIN_STRING_TOKENS]
    movable = sum(n for _, n in long_values)
    fixed = original - movable
    if whole:
        if fixed > limit:
            raise BudgetError(
                f"the JSON structure (keys, numbers, short strings) alone needs about {fixed} tokens but the budget "
                f"is {limit}; raise the budget"
            )
        scale = (limit - fixed) / movable if movable else 1.0
    else:
        scale = limit / original
    for _ in range(6):
        spliced, decisions = _splice(compressor, request, text, long_values, min(1.0, scale))
        used = tok.count(spliced)
        if not whole or used <= limit:
            break
        scale *= max(0.0, 1 - (used - limit) / max(1, movable * scale)) * 0.95
    else:
        raise BudgetError(f"could not fit the JSON into {limit} tokens by shortening its string values")
    details = {"structure": "json" if whole else "fenced-json", "strings_compressed": len(long_values)}
    if whole:
        segments = decisions
        return CompressionResult(
            spliced,
            original,
            used,
            compressor.name,
            tok.name,
            request.budget.describe(),
            segments,
            {"total_s": time.perf_counter() - start},
            details,
        )
    prose = replace(request, text=spliced, budget=Budget(target_tokens=limit))
    result = compressor.compress(prose)
    result.original_tokens = original
    result.budget = request.budget.describe()
    result.details = {**result.details, **details, "segments_refer_to": "text after JSON string compression"}
    return result


def _splice(
    compressor: Compressor, request: CompressionRequest, text: str, values: list[tuple[StringValue, int]], scale: float
) -> tuple[str, list[SegmentDecision]]:
    """Rebuild ``text`` with each long string value compressed to ``scale`` of its tokens."""
    parts, decisions, cursor = [], [], 0
    for v, n in values:
        if v.start > cursor:
            decisions.append(SegmentDecision(text[cursor : v.start], cursor, v.start, None, True, True))
        share = int(n * scale)
        if share >= n:
            new = text[v.start : v.end]
            decisions.append(SegmentDecision(new, v.start, v.end, None, True))
        elif share <= 0:
            new = '""'
            decisions.append(SegmentDecision(text[v.start : v.end], v.start, v.end, None, False, rewritten=new))
        else:
            sub = replace(request, text=v.value, budget=Budget(target_tokens=share))
            out = compressor.compress(sub).text
            new = json.dumps(out, ensure_ascii=False)
            decisions.append(SegmentDecision(text[v.start : v.end], v.start, v.end, None, True, rewritten=new))
        parts.append(text[cursor : v.start] + new)
        cursor = v.end
    parts.append(text[cursor:])
    if cursor < len(text):
        decisions.append(SegmentDecision(text[cursor:], cursor, len(text), None, True, True))
    return "".join(parts), decisions
