"""Properties every extractive method must have, fuzzed with hypothesis on the model-free methods.

The same contract on one real text, for every registered method, is in ``test_contract.py``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import promptshrink as ps
from promptshrink.segmentation import LEVELS, protected_spans, segment

FAST_METHODS = ["keep_first", "keep_last", "random", "tfidf"]
WORDS = st.sampled_from(
    [
        "the",
        "a",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "42",
        "3.14",
        "Paris",
        "France",
        "capital",
        "quickly",
        ".",
        ",",
        "!",
        "?",
        "\n",
        "\n\n",
        "code",
        "`x=1`",
        "https://example.org/a?b=1",
        "über",
        "naïve",
        "東京",
    ]
)
TEXTS = st.lists(WORDS, min_size=1, max_size=120).map(" ".join).filter(lambda t: t.strip())
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def below_one_word(exc: ps.BudgetError) -> bool:
    """Whether the error says the budget holds not even one word, with that word's cost above the budget."""
    found = re.search(r"budget of (\d+) tokens holds not even the first word .*\((\d+) tokens\)", str(exc))
    return bool(found) and int(found.group(2)) > int(found.group(1))


def words_of(text: str) -> list[str]:
    """Space-separated words, with Han and kana characters one word each (their words are per character)."""
    return re.findall(r"[\u3040-\u30ff\u4e00-\u9fff]|[^\s\u3040-\u30ff\u4e00-\u9fff]+", text)


def is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(any(w == b for b in it) for w in small)


@FAST
@given(text=TEXTS, level=st.sampled_from(LEVELS))
def test_units_tile_the_text(text, level):
    units = segment(text, level, protected_spans(text, ["cat dog"]))
    assert "".join(u.text for u in units) == text
    assert all(text[u.start : u.end] == u.text for u in units)
    for start, end in protected_spans(text, ["cat dog"]):
        assert any(u.forced and u.start <= start and end <= u.end for u in units)


@FAST
@given(text=TEXTS, method=st.sampled_from(FAST_METHODS), rate=st.floats(0.05, 1.0), seed=st.integers(0, 5))
@example(text="\n the", method="keep_first", rate=1.0, seed=0)  # found by hypothesis: leading whitespace, rate 1
def test_output_is_ordered_subsequence_and_within_rate(text, method, rate, seed):
    try:
        r = ps.compress(text, method, rate=rate, seed=seed)
    except ps.BudgetError as exc:  # protected content (code, URLs) or a first word larger than the budget
        assert below_one_word(exc) or "protected content alone needs" in str(exc) and ("`" in text or "http" in text)
        return
    tok = ps.get_tokenizer("cl100k_base")
    assert r.compressed_tokens == tok.count(r.text)
    assert r.compressed_tokens <= max(1, int(rate * r.original_tokens + 1e-9)) or r.text == text
    kept = [s for s in r.segments if s.kept]
    assert [s.start for s in kept] == sorted(s.start for s in kept)
    assert r.text == "".join(s.text for s in kept).lstrip() or r.text == text  # a kept-whole input comes back as is
    assert is_subsequence(words_of(r.text), words_of(text)) or r.text == text


@FAST
@given(text=TEXTS, method=st.sampled_from(FAST_METHODS), budget=st.integers(1, 60))
def test_target_tokens_is_never_exceeded(text, method, budget):
    try:
        r = ps.compress(text, method, target_tokens=budget, tokenizer="o200k_base")
    except ps.BudgetError as exc:
        assert below_one_word(exc) or "protected content" in str(exc)
        return
    assert ps.get_tokenizer("o200k_base").count(r.text) <= budget


@FAST
@given(text=TEXTS, method=st.sampled_from(FAST_METHODS))
def test_forced_strings_survive(text, method):
    words = [w for w in text.split() if re.fullmatch(r"\w+", w)]
    if not words:
        return
    must = words[len(words) // 2]
    try:
        r = ps.compress(text, method, rate=0.3, keep=[must], unit="word")
    except ps.BudgetError as exc:  # only when protected content alone is over the budget
        need, budget = map(int, re.findall(r"needs (\d+) tokens but the budget is (\d+)", str(exc))[0])
        assert need > budget
        return
    assert must in r.text


def test_random_depends_on_the_seed(article):
    seven, eight = (ps.compress(article, "random", rate=0.5, seed=seed).text for seed in (7, 8))
    assert seven != eight


def test_keep_first_and_last_are_truncations(article):
    first = ps.compress(article, "keep_first", target_tokens=100)
    last = ps.compress(article, "keep_last", target_tokens=100)
    assert article.startswith(first.text)
    assert article.rstrip().endswith(last.text.rstrip())
    assert 95 <= first.compressed_tokens <= 100 and 95 <= last.compressed_tokens <= 100


def test_tfidf_question_keeps_the_answer_sentence(article):
    r = ps.compress(article, "tfidf", rate=0.1, question="What happened to the Challenger heroes?")
    assert "Challenger heroes" in r.text


def test_code_blocks_and_urls_are_never_broken():
    text = (
        "Intro sentence here. " * 20
        + "\n```python\ndef f(x):\n    return x + 1\n```\n"
        + "See https://example.org/x?y=1 now. "
        + "Filler text again. " * 20
    )
    r = ps.compress(text, "keep_last", rate=0.4, unit="word")
    assert "```python\ndef f(x):\n    return x + 1\n```" in r.text
    assert "https://example.org/x?y=1" in r.text


def test_budget_smaller_than_protected_content_is_a_clear_error():
    with pytest.raises(ps.BudgetError, match="protected content alone needs"):
        ps.compress("alpha beta gamma delta epsilon zeta", "keep_first", target_tokens=2, keep=["gamma delta epsilon"])


def test_segments_explain_the_decisions(article):
    r = ps.compress(article, "tfidf", rate=0.5)
    assert any(s.kept for s in r.segments) and any(not s.kept for s in r.segments)
    assert all(s.score is not None for s in r.segments)
    assert "".join(s.text for s in r.segments) == article
    d = r.to_dict()
    assert d["ratio"] == pytest.approx(r.compressed_tokens / r.original_tokens, abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": ""}, "empty"),
        ({"text": "   \n"}, "empty"),
        ({"text": 5}, "must be a string"),
        ({"rate": 0}, r"\(0, 1\]"),
        ({"rate": 1.5}, r"\(0, 1\]"),
        ({"rate": float("nan")}, "rate"),
        ({"rate": -0.1}, r"\(0, 1\]"),
        ({"target_tokens": 0}, "> 0"),
        ({"target_tokens": -3}, "> 0"),
        ({"target_tokens": 2.5}, "integer"),
        ({"rate": 0.5, "target_tokens": 10}, "not both"),
        ({"keep": "abc"}, "list of strings"),
        ({"unit": "paragraphs"}, "unit must be one of"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, message):
    args = {"text": "Some text to compress. More text here.", "method": "keep_first", **kwargs}
    with pytest.raises(ps.PromptShrinkError, match=message):
        ps.compress(**args)


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(ps.UnknownMethodError, match="available: .*keep_first"):
        ps.compress("text here", "llmlingua-9000")


def test_phrases_start_at_function_words_and_after_clause_punctuation():
    text = "  The cat sat on (the) mat, quietly waiting. Then it left "
    units = segment(text, "phrase")
    assert [u.text for u in units] == ["  The cat sat", " on (the)", " mat,", " quietly waiting.", " Then it left "]
    assert all(text[u.start : u.end] == u.text for u in units)
