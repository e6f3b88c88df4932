"""The one request type and pipeline: every library entry point honours every option the same way.

Regression tests for options that some entry points dropped (issue 18): `compress_messages` and
`compress_passages` ignored ``protect_numbers`` and ``seed``, and `compress_passages` skipped the JSON splice.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

import promptshrink as ps
from promptshrink.errors import BudgetError, InvalidInputError, library_errors
from promptshrink.request import CompressOptions, request_fields

NUMBERS = (
    "The survey covered 1843 households in the northern district. Roughly 27 percent reported a second income. "
    "The median rent was 912 dollars a month, up from 655 a decade earlier. Officials counted 44 new schools. "
    "Rainfall reached 1210 millimetres, the highest since 1998. The river rose by 3 metres in spring. "
    "About 61 bridges were inspected and 9 of them were closed for repairs during the summer months."
)
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma " * 4


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", text))


def test_messages_honour_protect_numbers() -> None:
    messages = [{"role": "user", "content": NUMBERS}, {"role": "user", "content": "Summarise."}]
    plain = ps.compress_messages(messages, "keep_first", rate=0.5, min_tokens=1)
    kept = ps.compress_messages(messages, "keep_first", rate=0.5, min_tokens=1, protect_numbers=True)
    assert _numbers(plain.messages[0]["content"]) < _numbers(NUMBERS)  # the budget drops some numbers...
    assert _numbers(kept.messages[0]["content"]) == _numbers(NUMBERS)  # ...unless they are protected


def test_messages_and_passages_honour_seed() -> None:
    def messages(seed: int) -> str:
        asked = [{"role": "user", "content": WORDS}, {"role": "user", "content": "Go."}]
        out = ps.compress_messages(asked, "random", rate=0.3, min_tokens=1, seed=seed)
        return out.messages[0]["content"]

    def passages(seed: int) -> str:
        return ps.compress_passages([WORDS, WORDS], None, "random", rate=0.3, seed=seed).result.text

    for run in (messages, passages):
        assert run(1) == run(1)
        assert len({run(s) for s in range(4)}) > 1  # the seed reaches the method


def test_passages_honour_protect_numbers() -> None:
    out = ps.compress_passages([NUMBERS, WORDS], None, "keep_last", rate=0.5, protect_numbers=True)
    assert _numbers(out.passages[0]["text"]) == _numbers(NUMBERS)


def test_passages_go_through_the_json_splice() -> None:
    record = {"id": 7, "title": "Report", "body": NUMBERS, "notes": WORDS}
    out = ps.compress_passages([json.dumps(record)], None, "tfidf", rate=0.5)
    parsed = json.loads(out.passages[0]["text"])  # still JSON: only long string values were shortened
    assert parsed["id"] == 7 and parsed["title"] == "Report"
    assert len(parsed["body"]) < len(NUMBERS)
    assert out.result.details["structure"] == "json"


def test_every_entry_point_shares_the_default_method() -> None:
    assert ps.compress_passages(["One sentence here. Another one there."], None, rate=0.5).method == "auto"


def test_split_question_keeps_the_tail_verbatim_and_in_budget() -> None:
    tail = "\n\nQuestion: How many households did the survey cover?\nAnswer:"
    text = NUMBERS + " " + WORDS + tail
    out = ps.compress(text, "tfidf", target_tokens=60, split_question=True)
    assert out.text.endswith(tail) and out.compressed_tokens <= 60
    assert out.original_tokens == ps.get_tokenizer().count(text)
    assert "".join(s.text for s in out.segments) == text  # the segments still tile the input
    assert out.details["question_split"]["tail_tokens"] == ps.get_tokenizer().count(tail)
    with pytest.raises(BudgetError, match="question at the end"):
        ps.compress(text, "tfidf", target_tokens=5, split_question=True)
    whole = ps.compress(text, "keep_first", rate=0.3)  # without the option the tail can go
    assert not whole.text.endswith(tail)


def test_split_question_in_messages_rejoins_the_final_message() -> None:
    tail = "\n\nQuestion: What was the median rent?"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": NUMBERS + " " + WORDS + tail}]
    out = ps.compress_messages(messages, "tfidf", rate=0.4, split_question=True)
    assert len(out.messages) == 2 and out.messages[1]["content"].endswith(tail)
    assert out.compressed_tokens < out.original_tokens
    assert len(out.per_message) == 2 and out.per_message[1] is not None


def test_options_are_validated_once_on_construction() -> None:
    for bad in ({"rate": 2}, {"seed": "1"}, {"keep": "x"}, {"timeout_s": 0}, {"protect_numbers": 1}):
        with pytest.raises(InvalidInputError):
            CompressOptions(**bad)
    opts = CompressOptions.from_kwargs(rate=0.5, unit="word")
    assert opts.options == {"unit": "word"} and opts.rate == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.rate = 0.3  # type: ignore[misc]


def test_client_fields_and_error_statuses_derive_from_the_library() -> None:
    from promptshrink.clients import client
    from promptshrink.service.errors import from_library

    assert {"rate", "protect_numbers", "seed", "split_question"} <= client.REQUEST_FIELDS
    assert request_fields() <= client.REQUEST_FIELDS
    for code, cls in library_errors().items():
        assert from_library(cls("x")).status == cls.status
        assert client.LIBRARY_ERRORS[code] is cls  # the client's copy lacked CompressionTimeoutError
    assert ps.CompressionTimeoutError.status == 504 and ps.ModelUnavailableError.status == 503
