"""Splitting a prompt into context and its trailing question/instruction (used by the proxy)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptshrink.question_split import split_trailing_question

CONTEXT = ("The treaty was signed in Vienna after long talks between the delegations. " * 8).rstrip()


@pytest.mark.parametrize(
    "tail",
    [
        "\n\nQuestion: When was the treaty signed?\nAnswer:",
        "\nQ: Where was it signed?\nA:",
        " Question: Where was it signed? Answer:",
        "\n\nAnswer the question using only the context above. Be brief.",
        "\n\nWhere was the treaty\nsigned?",
        "\n\nWho signed it?\n\nAnswer:",
        "\n\nquestion: lower-case markers count too?",
    ],
)
def test_trailing_question_is_split_off_verbatim(tail: str) -> None:
    split = split_trailing_question(CONTEXT + tail)
    assert split is not None and split.tail == tail and split.context == CONTEXT
    assert split.question == tail.strip()


@pytest.mark.parametrize(
    "text",
    [
        CONTEXT,  # no question at all
        CONTEXT + "Who signed it?",  # one line: nothing to split it from
        "Question: what does the following text say?\n\n" + CONTEXT,  # the question is not at the end
        "Short context.\n\nQuestion: a question that is longer than the context before it?",
        "   \n ",
    ],
)
def test_no_split_without_a_trailing_question(text: str) -> None:
    assert split_trailing_question(text) is None


def test_markers_are_configurable_and_a_distant_marker_is_ignored() -> None:
    text = CONTEXT + "\n\nFrage: Wann wurde der Vertrag unterzeichnet."
    assert split_trailing_question(text) is None
    assert split_trailing_question(text, markers=["Frage:"]).tail == "\n\nFrage: Wann wurde der Vertrag unterzeichnet."
    far = "Question: ignore me.\n" + CONTEXT * 3 + "\n\nSummarise it."
    assert split_trailing_question(far, max_tail_chars=200) is None


@given(st.text(max_size=400), st.text(max_size=80))
def test_split_is_lossless(context: str, tail: str) -> None:
    text = context + "\n\nQuestion: " + tail
    split = split_trailing_question(text)
    if split is not None:
        assert split.context + split.tail == text and split.context.strip()
        assert len(split.tail.strip()) < len(split.context.strip())
