"""Split text into contiguous units (token, word, phrase, sentence, chunk) with protected spans kept atomic.

Every unit owns its leading whitespace, so the units of a text concatenate back to exactly that text and any
ordered subset of them concatenates to an ordered subsequence of it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import NamedTuple

from .errors import InvalidInputError

LEVELS = ("token", "word", "phrase", "sentence", "chunk")
MAX_KEEP = 100  # distinct ``keep`` strings per request
MAX_KEEP_MATCHES = 10_000  # their occurrences in the text, all together

_TOKEN_RE = re.compile(r"\s*(?:'(?:[sdmt]|ll|ve|re)\b|[^\W\d_]+|\d+|[^\w\s]+|_+)", re.UNICODE)
_WORD_RE = re.compile(r"\s*\S+")
_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "fig",
    "no",
    "vol",
    "inc",
    "ltd",
    "co",
    "corp",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "u.s",
    "u.k",
    "approx",
    "dept",
    "est",
    "al",
}
# Scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) and the CJK
# punctuation and fullwidth forms that go with them: their words are found per character (grapheme) instead.
_UNSPACED = (
    "\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff"
)
_UNSPACED_RE = re.compile(f"[{_UNSPACED}]")
# Sentence ends that need no space after them: CJK 。！？；… and fullwidth forms, Arabic ؟ ۔, Devanagari । ॥,
# Armenian ։, Ethiopic ። ፧, Myanmar ။, Khmer ។, Tibetan །.
_WIDE_ENDS = "\u3002\uff01\uff1f\uff1b\uff0e\uff61\u061f\u06d4\u0964\u0965\u0589\u1362\u1367\u104b\u17d4\u0f0d"
_CLOSERS = "\"')\\]\u201d\u2019\u00bb\u300d\u300f\uff09\u3011\u3009\u300b"
_SENT_END_RE = re.compile(
    f"[.!?\u2026]+[{_CLOSERS}]*(?=\\s+|$)"  # Latin-style ends: followed by a space or the end
    f"|(?:[{_WIDE_ENDS}]|\u2026+(?=[{_UNSPACED}]))[{_WIDE_ENDS}\u2026]*[{_CLOSERS}]*"  # no space needed
    "|\\n\\s*\\n"
    "|(?<=[\u0e00-\u0eff\u1780-\u17ff])[ \\t]+(?=[\u0e00-\u0eff\u1780-\u17ff])"  # Thai, Lao, Khmer: spaces
)
# Clause punctuation inside unspaced text: a phrase ends after it.
_WIDE_CLAUSE_RE = re.compile(f"[^{_WIDE_ENDS}\uff0c\u3001\uff1a,;:]*[{_WIDE_ENDS}\uff0c\u3001\uff1a,;:]+|.+", re.DOTALL)
LONG_WORD = 32  # characters: a longer run without spaces (base64, hashes, minified code) is cut into pieces
WORD_PIECE = {"token": 8, "word": 16, "phrase": 32}  # piece length of such runs, per level
UNSPACED_PHRASE = 8  # graphemes: the longest phrase cut out of unspaced text
_UNSPACED_RUN_RE = re.compile(f"[{_UNSPACED}]+")
_LEADING_VOWELS = set("\u0e40\u0e41\u0e42\u0e43\u0e44\u0ec0\u0ec1\u0ec2\u0ec3\u0ec4")  # Thai, Lao: written first
_PHRASE_ENDERS = set(",;:.!?)\u060c" + _WIDE_ENDS)  # a phrase starts after one of these
_PUNCT_ONLY_RE = re.compile(r"[^\w\s]+")
_NEEDS_SPLIT_RE = re.compile(f"[{_UNSPACED}]|\\S{{{LONG_WORD + 1},}}")
# Light phrase splitter: a new phrase starts at an (English) function word or after clause punctuation.
_PHRASE_STARTERS = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "nor",
    "so",
    "yet",
    "of",
    "in",
    "on",
    "at",
    "to",
    "for",
    "with",
    "by",
    "from",
    "into",
    "onto",
    "over",
    "under",
    "about",
    "after",
    "before",
    "between",
    "through",
    "during",
    "without",
    "within",
    "because",
    "although",
    "while",
    "which",
    "who",
    "whom",
    "whose",
    "that",
    "when",
    "where",
    "if",
    "than",
    "as",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "has",
    "have",
    "had",
    "will",
    "would",
    "can",
    "could",
    "should",
    "may",
    "might",
    "must",
    "this",
    "these",
    "those",
    "its",
    "their",
}
_URL_RE = re.compile(r"https?://[^\s<>\"')\]]+|www\.[^\s<>\"')\]]+")
_CODE_BLOCK_RE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)", re.DOTALL)
_INLINE_CODE_RE = re.compile(r"`[^`\n]+`")
_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?\$?\d[\d,]*(?:\.\d+)?(?:%|st|nd|rd|th)?(?!\w)")


class Unit(NamedTuple):
    """A contiguous piece of the input: ``text == source[start:end]``; ``forced`` units are never dropped.

    A named tuple rather than a frozen dataclass: a 2K-token text has ~1,700 word units and building them is
    on every request's path (a frozen dataclass costs 3-4x more per instance).
    """

    text: str
    start: int
    end: int
    forced: bool = False

    @property
    def content(self) -> str:
        return self.text.strip()


def protected_spans(
    text: str,
    keep: Sequence[str] = (),
    *,
    protect_code: bool = True,
    protect_urls: bool = True,
    protect_tables: bool = True,
    protect_numbers: bool = False,
) -> list[tuple[int, int]]:
    """Character spans that must survive compression, merged and sorted.

    Args:
        text: the input.
        keep: literal strings whose every occurrence survives (at most `MAX_KEEP` distinct ones, matching at
            most `MAX_KEEP_MATCHES` times in all; more raises `InvalidInputError`).
        protect_code: fenced and inline code.
        protect_urls: URLs.
        protect_tables: markdown tables (kept whole).
        protect_numbers: every number.
    """
    spans = keep_spans(text, keep)
    patterns = []
    if protect_code:
        patterns += [_CODE_BLOCK_RE, _INLINE_CODE_RE]
    if protect_urls:
        patterns.append(_URL_RE)
    if protect_numbers:
        patterns.append(_NUMBER_RE)
    for pattern in patterns:
        spans.extend((m.start(), m.end()) for m in pattern.finditer(text))
    if protect_tables:
        spans.extend(table_spans(text))
    return merge_spans(spans)


def keep_spans(text: str, keep: Sequence[str]) -> list[tuple[int, int]]:
    """Spans of every occurrence of the ``keep`` strings, overlapping ones included, in one scan of ``text``.

    One alternation (longest string first) inside a lookahead is tried at each position, so the cost grows with
    the text, not with entries x occurrences, and repeated entries count once.
    """
    needles = sorted({k for k in keep if k}, key=len, reverse=True)
    if not needles:
        return []
    if len(needles) > MAX_KEEP:
        raise InvalidInputError(f"keep has {len(needles)} distinct strings; at most {MAX_KEEP}")
    finder = re.compile("(?=(" + "|".join(map(re.escape, needles)) + "))")
    spans = []
    for m in finder.finditer(text):
        if len(spans) == MAX_KEEP_MATCHES:
            raise InvalidInputError(
                f"the keep strings occur more than {MAX_KEEP_MATCHES} times in the text; keep longer, rarer strings"
            )
        spans.append((m.start(), m.end(1)))
    return spans


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _sentence_bounds(text: str) -> list[int]:
    """End offsets of sentences (exclusive)."""
    ends = []
    for m in _SENT_END_RE.finditer(text):
        if m.group().startswith("."):
            word = re.search(r"([\w.]+)$", text[max(0, m.start() - 32) : m.start()])
            if word and (word.group(1).lower() in _ABBREVIATIONS or len(word.group(1)) == 1):
                continue
        ends.append(m.end())
    single_newlines = [m.end() for m in re.finditer(r"\n", text)]
    return sorted(set(ends + single_newlines))


def _split_by_ends(text: str, ends: list[int], base: int) -> list[Unit]:
    units, prev = [], 0
    for end in ends + [len(text)]:
        if end <= prev:
            continue
        piece = text[prev:end]
        if piece.strip() or not units:
            units.append(Unit(piece, base + prev, base + end))
        else:  # pure whitespace: attach to the previous unit
            last = units[-1]
            units[-1] = Unit(last.text + piece, last.start, base + end)
        prev = end
    return units


def _leading_ws_convention(units: list[Unit]) -> list[Unit]:
    """Move trailing whitespace of each unit onto the next one, so units own their *leading* whitespace."""
    out: list[Unit] = []
    carry = ""
    for u in units:
        body = u.text.rstrip()
        trail = u.text[len(body) :]
        start = u.start - len(carry)
        out.append(Unit(carry + body, start, u.end - len(trail), u.forced))
        carry = trail
    if carry and out:
        last = out[-1]
        out[-1] = Unit(last.text + carry, last.start, last.end + len(carry), last.forced)
    return [u for u in out if u.text]


def _split_free(text: str, level: str, base: int, chunk_sentences: int) -> list[Unit]:
    if level == "token":
        units = [Unit(m.group(), base + m.start(), base + m.end()) for m in _TOKEN_RE.finditer(text)]
    elif level == "word":  # matches are back to back from offset 0: offsets follow from the lengths
        words = _WORD_RE.findall(text)
        ends = list(accumulate(map(len, words), initial=base))
        units = list(map(Unit, words, ends[:-1], ends[1:]))
    elif level == "sentence":
        return _leading_ws_convention(_split_by_ends(text, _sentence_bounds(text), base))
    elif level == "chunk":
        sentences = _leading_ws_convention(_split_by_ends(text, _sentence_bounds(text), base))
        units = []
        for i in range(0, len(sentences), chunk_sentences):
            group = sentences[i : i + chunk_sentences]
            units.append(Unit("".join(u.text for u in group), group[0].start, group[-1].end))
        return units
    elif level == "phrase":  # words back to back as above; a phrase starts at a function word or after , ; : . ! ? )
        words = _WORD_RE.findall(text)
        ends = list(accumulate(map(len, words), initial=base))
        starts = [
            i
            for i, w in enumerate(words)
            if i == 0 or w.lstrip().lower().strip("\"'(") in _PHRASE_STARTERS or words[i - 1][-1] in _PHRASE_ENDERS
        ]
        bounds = [ends[i] for i in starts] + [ends[-1]]
        units = [Unit(text[a - base : b - base], a, b) for a, b in zip(bounds, bounds[1:])]
    else:
        raise ValueError(f"unknown segmentation level {level!r}; use one of {LEVELS}")
    # leading text not matched by the regex (only whitespace) is glued to the first unit
    if units and units[0].start > base:
        first = units[0]
        units[0] = Unit(text[: first.end - base], base, first.end)
    if units and units[-1].end < base + len(text):
        last = units[-1]
        units[-1] = Unit(last.text + text[last.end - base :], last.start, base + len(text))
    if not units and text:
        units = [Unit(text, base, base + len(text))]
    if _NEEDS_SPLIT_RE.search(text):
        units = [piece for u in units for piece in _split_unspaced(u, level)]
    return units


def _graphemes(text: str) -> list[str]:
    """``text`` cut before every character that is not a combining mark (Thai vowels and tones stay attached)."""
    out: list[str] = []
    for ch in text:
        if out and (unicodedata.category(ch)[0] == "M" or ch in "\u200c\u200d" or out[-1] in _LEADING_VOWELS):
            out[-1] += ch
        else:
            out.append(ch)
    return out


def _pieces(body: str, level: str) -> list[str]:
    """Word-like pieces of one whitespace-free run: unspaced script per grapheme (word, token) or per clause of at
    most `UNSPACED_PHRASE` graphemes (phrase); other runs longer than `LONG_WORD` in `WORD_PIECE` slices."""
    out: list[str] = []
    cursor = 0
    for m in _UNSPACED_RUN_RE.finditer(body):
        if m.start() > cursor:
            out.extend(_slices(body[cursor : m.start()], level))
        run = m.group()
        if level == "phrase":
            for clause in _WIDE_CLAUSE_RE.findall(run):
                marks = _graphemes(clause)
                out.extend("".join(marks[i : i + UNSPACED_PHRASE]) for i in range(0, len(marks), UNSPACED_PHRASE))
        else:
            out.extend(_graphemes(run))
        cursor = m.end()
    if cursor < len(body):
        out.extend(_slices(body[cursor:], level))
    # punctuation (CJK or ASCII) joins the grapheme before it, so no unit is a lone comma
    merged: list[str] = []
    for piece in out:
        if merged and _PUNCT_ONLY_RE.fullmatch(piece):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def _slices(run: str, level: str) -> list[str]:
    if len(run) <= LONG_WORD:
        return [run]
    size = WORD_PIECE[level]
    return [run[i : i + size] for i in range(0, len(run), size)]


def _split_unspaced(unit: Unit, level: str) -> list[Unit]:
    """``unit`` cut into word-like pieces (see `_pieces`); the first keeps the unit's leading whitespace and
    spaces inside the unit stay with the piece after them."""
    if unit.forced or not _NEEDS_SPLIT_RE.search(unit.text):
        return [unit]
    out: list[Unit] = []
    for m in _WORD_RE.finditer(unit.text):
        lead = len(m.group()) - len(m.group().lstrip())
        pieces = _pieces(m.group()[lead:], level)
        pieces[0] = m.group()[:lead] + pieces[0]
        cursor = unit.start + m.start()
        for piece in pieces:
            out.append(Unit(piece, cursor, cursor + len(piece)))
            cursor += len(piece)
    if not out:
        return [unit]
    if out[0].start > unit.start:  # leading whitespace only
        out[0] = Unit(unit.text[: out[0].end - unit.start], unit.start, out[0].end)
    if out[-1].end < unit.end:
        last = out[-1]
        out[-1] = Unit(unit.text[last.start - unit.start :], last.start, unit.end)
    return out


def _force_overlapping(units: list[Unit], protected: list[tuple[int, int]]) -> list[Unit]:
    """Merge units that share a protected span and mark every unit that touches one as forced."""
    out: list[Unit] = []
    span_i = 0
    for u in units:
        while span_i < len(protected) and protected[span_i][1] <= u.start:
            span_i += 1
        touches = span_i < len(protected) and protected[span_i][0] < u.end
        if out and out[-1].forced and touches and protected[span_i][0] < out[-1].end:
            last = out[-1]
            out[-1] = Unit(last.text + u.text, last.start, u.end, True)
        else:
            out.append(Unit(u.text, u.start, u.end, touches))
    return out


def segment(
    text: str,
    level: str = "sentence",
    protected: Sequence[tuple[int, int]] = (),
    *,
    chunk_sentences: int = 4,
) -> list[Unit]:
    """Split ``text`` into units at ``level``; protected spans are never split and their units are forced.

    At token/word/phrase level a protected span is one unit of its own; at sentence/chunk level the
    sentence (or chunk) that holds it is forced as a whole.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown segmentation level {level!r}; use one of {LEVELS}")
    spans = merge_spans(protected)
    if level in ("sentence", "chunk"):
        return _force_overlapping(_split_free(text, level, 0, chunk_sentences), spans)
    units: list[Unit] = []
    cursor = 0
    for start, end in spans:
        if start > cursor:
            units.extend(_split_free(text[cursor:start], level, cursor, chunk_sentences))
        # the protected span takes the whitespace just before it along
        lead = len(text[cursor:start]) - len(text[cursor:start].rstrip())
        if lead and units and units[-1].end == start:
            last = units[-1]
            trimmed = last.text[: len(last.text) - lead]
            if trimmed:
                units[-1] = Unit(trimmed, last.start, last.end - lead, last.forced)
            else:
                units.pop()
        else:
            lead = 0
        units.append(Unit(text[start - lead : end], start - lead, end, forced=True))
        cursor = end
    if cursor < len(text):
        units.extend(_split_free(text[cursor:], level, cursor, chunk_sentences))
    return units


_TABLE_SEPARATOR = re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$")


def table_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of markdown tables (header row, separator row, body rows) to keep whole."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    spans = []
    i = 0
    while i + 1 < len(lines):
        if "|" in lines[i] and _TABLE_SEPARATOR.match(lines[i + 1].rstrip("\r\n")):
            j = i + 2
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                j += 1
            spans.append((starts[i], starts[i] + len(text[starts[i] : starts[j]].rstrip())))
            i = j
        else:
            i += 1
    return spans
