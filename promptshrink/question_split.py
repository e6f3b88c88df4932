"""Find the trailing question or instruction of a prompt that holds context and question together.

RAG templates and legacy completion prompts put the retrieved context first and the question last
("...context...\\n\\nQuestion: When was it signed?\\nAnswer:"). Compressing such a prompt as one text loses the
question (it may be dropped, and question-aware methods never see it). `split_trailing_question` separates the
tail so that the context can be compressed *for* that question and the tail kept verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# A line that starts with one of these (case-insensitive) opens the question/instruction tail.
DEFAULT_QUESTION_MARKERS: tuple[str, ...] = (
    "Question:",
    "Q:",
    "Query:",
    "Answer the question",
    "Answer the following question",
    "Instruction:",
    "Instructions:",
    "Task:",
)
# Lines after the question that only prompt for the answer ("Answer:", "A:").
_ANSWER_CUE = re.compile(r"^\s*(answer|a|response|output)\s*:\s*$", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class QuestionSplit:
    """``context + tail == text``; ``tail`` starts with the whitespace that separated it from the context."""

    context: str
    tail: str

    @property
    def question(self) -> str:
        """The tail without surrounding whitespace: what question-aware methods should score against."""
        return self.tail.strip()


def split_trailing_question(
    text: str, markers: Sequence[str] = DEFAULT_QUESTION_MARKERS, max_tail_chars: int = 1000
) -> QuestionSplit | None:
    """Split ``text`` into context and a trailing question/instruction, or None when it has no such tail.

    The tail starts at the earliest of ``markers`` within the last ``max_tail_chars`` characters that opens a
    line or follows the end of a sentence; failing that, it is the last paragraph (or, without blank lines,
    the last line) when that ends with a question mark, optionally followed by an answer cue such as
    ``Answer:``. The tail must be shorter than the context, so a prompt that is mostly question is not split.
    """
    body = text.rstrip()
    if not body.strip():
        return None
    start = _marker_start(body, markers, max_tail_chars)
    if start is None:
        start = _question_paragraph_start(body, max_tail_chars)
    if start is None:
        return None
    while start > 0 and text[start - 1].isspace():  # the separating whitespace goes with the tail
        start -= 1
    context, tail = text[:start], text[start:]
    if not context.strip() or len(tail.strip()) >= len(context.strip()):
        return None
    return QuestionSplit(context, tail)


def _line_starts(body: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer(r"\n", body)]


def _marker_start(body: str, markers: Sequence[str], max_tail_chars: int) -> int | None:
    """The earliest marker in the window that opens a line or follows the end of a sentence."""
    alternatives = "|".join(re.escape(m.strip()) for m in markers if m.strip())
    if not alternatives:
        return None
    pattern = re.compile(rf"(?:^|(?<=\n)|(?<=[.!?][ \t]))[ \t]*(?:{alternatives})", re.IGNORECASE)
    found = pattern.search(body, max(0, len(body) - max_tail_chars))
    return found.start() if found else None


def _question_paragraph_start(body: str, max_tail_chars: int) -> int | None:
    lines = body.split("\n")
    end = len(lines)
    while end > 1 and (
        _ANSWER_CUE.match(lines[end - 1]) or not lines[end - 1].strip()
    ):  # "Question?\nAnswer:" ends with the cue
        end -= 1
    if not lines[end - 1].rstrip().endswith("?"):
        return None
    question_line = _line_starts(body)[end - 1]
    breaks = [m.end() for m in _BLANK_LINE.finditer(body) if m.end() <= question_line]
    start = breaks[-1] if breaks else question_line
    start = start + (len(body[start:]) - len(body[start:].lstrip()))
    return start if len(body) - start <= max_tail_chars else None
