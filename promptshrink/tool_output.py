"""Structure-aware shrinking of agents' tool outputs: JSON stays valid, logs lose repeats, code keeps signatures.

A tool result is classified by its shape (`kind_of`) and shrunk to a token limit by the rule for that shape:

- ``json`` (the whole output parses): long arrays keep their items most relevant to the question (in order) and
  end with a string note of how many items were dropped and what they looked like; long string values are
  shortened by the compression method; keys, numbers and nesting are kept, so the result still parses.
- ``log`` (many lines, most of them timestamped or leveled, or many repeats): lines that differ only in numbers
  are kept once with a ``[xN]`` count; if that is not enough, error/warning lines, lines sharing words with the
  question and the first and last lines are kept, with ``[... N lines dropped]`` markers.
- ``code`` (several definition lines): signatures, decorators and imports are kept, bodies become ``...``.
- ``text``: the compression method, as for any prose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .json_splice import _parses
from .target_tokenizer import TargetTokenizer

Shrink = Callable[[str, int], str]  # (text, token limit) -> compressed text, the method's job for prose

_SIGNATURE = re.compile(
    r"^\s*(@\w|def |async def |class |function |export |public |private |protected |static |func |fn |pub fn |"
    r"impl |struct |interface |import |from \S+ import |#include|package |module |const \w+ = \(|type \w+ )"
)
_LOG_LINE = re.compile(
    r"^\s*(\[?\d{4}-\d\d-\d\d|\[?\d\d:\d\d:\d\d|\w{3} +\d+ \d\d:"
    r"|\[?(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|CRITICAL)\b)",
    re.IGNORECASE,
)
_IMPORTANT = re.compile(r"\b(error|exception|fail(ed|ure)?|fatal|panic|traceback|warn(ing)?|critical|denied)\b", re.I)
_NUMBERS = re.compile(r"0x[0-9a-f]+|\d+(\.\d+)?", re.I)
_WORD = re.compile(r"\d+|[a-z]{3,}", re.I)
MIN_ITEMS = 0  # an array can shrink to its note alone
MIN_STRING_TOKENS = 8


def kind_of(text: str) -> str:
    """``json``, ``log``, ``code`` or ``text``: the shape that decides how the output is shrunk."""
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and _parses(stripped):
        return "json"
    lines = [line for line in text.splitlines() if line.strip()]
    signatures = sum(1 for line in lines if _SIGNATURE.match(line))
    if signatures >= 2 and signatures * 20 >= len(lines):
        return "code"
    if len(lines) >= 8:
        leveled = sum(1 for line in lines if _LOG_LINE.match(line))
        distinct = len({_template(line) for line in lines})
        if leveled * 2 >= len(lines) or distinct * 10 <= len(lines) * 7:
            return "log"
    return "text"


def shrink_tool_output(
    text: str, limit: int, tokenizer: TargetTokenizer, question: str | None, shrink: Shrink
) -> tuple[str, str]:
    """``text`` cut to about ``limit`` tokens by the rule for its shape; returns (new text, shape)."""
    kind = kind_of(text)
    if tokenizer.count(text) <= limit:
        return text, kind
    terms = _terms(question)
    if kind == "json":
        return _shrink_json(text, limit, tokenizer, terms, shrink), kind
    if kind == "log":
        return _shrink_log(text, limit, tokenizer, terms), kind
    if kind == "code":
        return _shrink_code(text), kind
    return shrink(text, limit), kind


def _terms(question: str | None) -> set[str]:
    return {w.lower() for w in _WORD.findall(question or "")}


def _overlap(text: str, terms: set[str]) -> int:
    return len(terms & {w.lower() for w in _WORD.findall(text)}) if terms else 0


def _template(line: str) -> str:
    return _NUMBERS.sub("#", line.strip())


# --- JSON -------------------------------------------------------------------------------------------------------


def _shrink_json(text: str, limit: int, tokenizer: TargetTokenizer, terms: set[str], shrink: Shrink) -> str:
    """Fewer array items and shorter strings, halved until the dump fits ``limit`` (or cannot shrink further)."""
    data = json.loads(text)
    indent = 2 if "\n" in text.strip() else None
    separators = None if indent else (",", ":") if ", " not in text and ": " not in text else None
    items, string_tokens = _longest_array(data), max(MIN_STRING_TOKENS, min(limit // 4, 256))
    cache: dict[tuple[str, int], str] = {}
    # the floor, past which the limit is exceeded rather than the JSON broken: keys, numbers, 8-token strings
    while True:
        shrunk = _json_node(data, max(MIN_ITEMS, items), string_tokens, tokenizer, terms, shrink, cache)
        out = json.dumps(shrunk, ensure_ascii=False, indent=indent, separators=separators)
        if tokenizer.count(out) <= limit or (items <= MIN_ITEMS and string_tokens <= MIN_STRING_TOKENS):
            return out
        items, string_tokens = items // 2, max(MIN_STRING_TOKENS, string_tokens // 2)


def _longest_array(node: Any) -> int:
    if isinstance(node, list):
        return max([len(node), *(_longest_array(v) for v in node)])
    if isinstance(node, dict):
        return max([0, *(_longest_array(v) for v in node.values())])
    return 0


def _json_node(
    node: Any,
    items: int,
    string_tokens: int,
    tokenizer: TargetTokenizer,
    terms: set[str],
    shrink: Shrink,
    cache: dict[tuple[str, int], str],
) -> Any:
    def again(child: Any) -> Any:
        return _json_node(child, items, string_tokens, tokenizer, terms, shrink, cache)

    if isinstance(node, dict):
        return {k: again(v) for k, v in node.items()}
    if isinstance(node, str):
        if len(node) < string_tokens * 2 or tokenizer.count(node) <= string_tokens:
            return node
        if (node, string_tokens) not in cache:
            cache[node, string_tokens] = shrink(node, string_tokens)
        return cache[node, string_tokens]
    if not isinstance(node, list) or len(node) <= items:
        return [again(v) for v in node] if isinstance(node, list) else node
    ranked = sorted(range(len(node)), key=lambda i: (-_overlap(json.dumps(node[i], ensure_ascii=False), terms), i))
    kept = sorted(ranked[:items])
    return [*(again(node[i]) for i in kept), _dropped_note(node, kept)]


def _dropped_note(node: list[Any], kept: list[int]) -> str:
    """What the array lost: the count, the kept positions and the common shape of the items."""
    dropped = len(node) - len(kept)
    if all(isinstance(v, dict) for v in node):
        keys = set.intersection(*(set(v) for v in node))
        shape = f"objects with keys {', '.join(sorted(keys))}" if keys else "objects"
    else:
        shape = "/".join(sorted({type(v).__name__ for v in node}))
    positions = ", ".join(str(i) for i in kept) or "none"
    return f"[promptshrink: {dropped} of {len(node)} items dropped ({shape}); kept items {positions}]"


# --- logs -------------------------------------------------------------------------------------------------------


def _shrink_log(text: str, limit: int, tokenizer: TargetTokenizer, terms: set[str]) -> str:
    lines = text.splitlines()
    first: dict[str, int] = {}
    counts: dict[int, int] = {}
    for i, line in enumerate(lines):
        at = first.setdefault(_template(line), i)
        counts[at] = counts.get(at, 0) + 1
    kept = [f"{lines[i]}  [x{n}]" if n > 1 else lines[i] for i, n in sorted(counts.items())]
    if tokenizer.count("\n".join(kept)) <= limit:
        return "\n".join(kept)
    score = [
        (bool(_IMPORTANT.search(line)) * 4 + _overlap(line, terms) + (i < 3 or i >= len(kept) - 3) * 2, -i)
        for i, line in enumerate(kept)
    ]
    order = sorted(range(len(kept)), key=lambda i: score[i], reverse=True)
    chosen: set[int] = set()
    used = 0
    for i in order:
        cost = tokenizer.count(kept[i]) + 1
        if used + cost > limit and chosen:
            continue
        chosen.add(i)
        used += cost
    out, gap = [], 0
    for i, line in enumerate(kept):
        if i in chosen:
            if gap:
                out.append(f"[... {gap} lines dropped]")
            out.append(line)
            gap = 0
        else:
            gap += 1
    if gap:
        out.append(f"[... {gap} lines dropped]")
    return "\n".join(out)


# --- code -------------------------------------------------------------------------------------------------------


def _shrink_code(text: str) -> str:
    """Signatures, decorators and imports kept; each run of body lines becomes one ``...`` at its indentation."""
    out: list[str] = []
    dropped_indent: str | None = None
    for line in text.splitlines():
        if _SIGNATURE.match(line) or not line.strip() and dropped_indent is None:
            if dropped_indent is not None:
                out.append(f"{dropped_indent}...")
                dropped_indent = None
            out.append(line)
        elif dropped_indent is None:
            dropped_indent = line[: len(line) - len(line.lstrip())]
    if dropped_indent is not None:
        out.append(f"{dropped_indent}...")
    return "\n".join(out)
