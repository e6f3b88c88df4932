"""ACC-RAG: relevance-ordered selection that fills the budget, or (adaptive=True) stops when the question is
covered; passages keep ids/metadata."""

from __future__ import annotations

import pytest

import promptshrink as ps
from promptshrink.methods.acc_rag import content_terms, covered
from promptshrink.passages import PassageAwareCompressor, paragraphs

PASSAGES = [
    {
        "id": "cat",
        "text": "The lighthouse keeper's cat is named Biscuit. Biscuit sleeps in the lantern room every night. "
        "The cat was adopted in 2019 from a shelter in Portland.",
        "metadata": {"source": "keeper.txt", "rank": 1},
    },
    {
        "id": "lib",
        "text": "The public library opened in 1921. It holds about 40,000 books. The library is closed on Mondays "
        "for maintenance. Its reading room was renovated in 2015.",
        "metadata": {"source": "library.txt"},
    },
    {
        "id": "park",
        "text": "Parking near the town hall is free after 6 pm. The new parking garage has 300 spaces. "
        "Residents need a permit for overnight parking.",
    },
    {
        "id": "bud",
        "text": "The committee approved an annual budget of 2 million dollars. Most of the budget goes to road "
        "repairs. The rest funds the library and the parks.",
        "metadata": {"source": "minutes.txt"},
    },
]
SIMPLE = "What is the cat's name?"
COMPLEX = (
    "What is the cat's name, when did the library open, how many spaces does the parking garage have, "
    "and what does the budget fund?"
)


@pytest.fixture(scope="module")
def simple():
    return ps.compress_passages(PASSAGES, SIMPLE, "acc_rag", rate=0.9, adaptive=True)


@pytest.fixture(scope="module")
def complex_():
    return ps.compress_passages(PASSAGES, COMPLEX, "acc_rag", rate=0.9, adaptive=True)


def test_simple_question_is_compressed_harder_than_a_complex_one(simple, complex_):
    assert simple.ratio < complex_.ratio <= 0.9
    assert "Biscuit" in simple.passages[0]["text"]
    joined = " ".join(p["text"] for p in complex_.passages)
    assert all(fact in joined for fact in ("Biscuit", "1921", "300 spaces", "funds the library"))
    assert complex_.result.details["uncovered_terms"] == []
    assert simple.result.details["stop_reason"] in ("sufficient", "score_gap", "saturated")


def test_ids_metadata_and_selection_are_reported(simple):
    assert [p["id"] for p in simple.passages] == [p["id"] for p in PASSAGES]
    assert [p["metadata"] for p in simple.passages] == [p.get("metadata", {}) for p in PASSAGES]
    assert [p["original_text"] for p in simple.passages] == [p["text"] for p in PASSAGES]
    details = simple.result.details
    chosen = {p["id"] for p in details["passages"] if p["selected_sentences"]}
    assert chosen == {p["id"] for p in simple.passages if p["kept"]} == {"cat"}
    assert details["passages"][0]["metadata"] == {"source": "keeper.txt", "rank": 1}
    assert all({"unit", "score", "gain", "coverage"} <= set(step) for step in details["selection"])


def test_the_hook_is_a_protocol():
    assert isinstance(ps.get_compressor("acc_rag"), PassageAwareCompressor)
    assert not isinstance(ps.get_compressor("tfidf"), PassageAwareCompressor)


@pytest.mark.parametrize("budget", [8, 20, 45])
def test_target_tokens_is_an_upper_bound(budget):
    r = ps.compress_passages(PASSAGES, COMPLEX, "acc_rag", target_tokens=budget, tokenizer="o200k_base")
    assert ps.get_tokenizer("o200k_base").count(r.result.text) == r.compressed_tokens <= budget


def test_plain_text_uses_paragraphs_keeps_order_and_the_answer():
    filler = [
        "The committee met on Tuesday to review the annual budget and several routine items.",
        "Members discussed the schedule for the spring maintenance of the public library.",
        "A short presentation covered the new parking arrangements near the town hall.",
    ]
    paras = [" ".join(filler)] * 3 + ["The lighthouse keeper's cat is named Biscuit. " + filler[0]] + [" ".join(filler)]
    text = "\n\n".join(paras)
    assert [p.id for p in paragraphs(text)] == ["p0", "p1", "p2", "p3", "p4"]
    r = ps.compress(text, "acc_rag", rate=0.5, question="What is the name of the cat?")
    assert "Biscuit" in r.text and r.compressed_tokens <= int(0.5 * r.original_tokens)
    kept = [s for s in r.segments if s.kept]
    assert [s.start for s in kept] == sorted(s.start for s in kept)
    assert r.text == "".join(s.text for s in kept).lstrip()
    assert r.details["passages"][3]["selected_sentences"]


def test_without_a_question_the_budget_is_filled(article):
    r = ps.compress(article, "acc_rag", rate=0.3)
    assert 0.25 <= r.ratio <= 0.3
    assert r.details["stop_reason"] == "budget"


def test_deterministic_protected_and_errors(article):
    a = ps.compress(article, "acc_rag", rate=0.4, question="What about taxes?", keep=["Challenger heroes"])
    b = ps.compress(article, "acc_rag", rate=0.4, question="What about taxes?", keep=["Challenger heroes"])
    assert a.text == b.text and "Challenger heroes" in a.text
    with pytest.raises(ps.BudgetError, match="protected content"):
        ps.compress(article, "acc_rag", target_tokens=3, keep=["Challenger heroes"])
    with pytest.raises(ps.InvalidInputError, match="doc_weight"):
        ps.compress("Some text. More.", "acc_rag", doc_weight=2.0)
    with pytest.raises(ps.InvalidInputError, match="passages"):
        ps.compress_passages([], SIMPLE, "acc_rag")


def test_query_terms_and_coverage():
    assert content_terms("What is the cat's name and when did it open?") == ["cat", "name", "open"]
    assert covered(["name", "open", "cat"], "The cat is named Biscuit; it opened late.") == {"name", "open", "cat"}


@pytest.mark.parametrize("rate", [0.6, 0.3, 0.1])
def test_the_default_fills_the_budget_that_adaptive_only_caps(simple, rate):
    filled = ps.compress_passages(PASSAGES, SIMPLE, "acc_rag", rate=rate)
    limit = int(rate * filled.original_tokens)
    assert simple.ratio < 0.4  # adaptive=True stops once the question is covered
    assert 0.9 * limit <= filled.compressed_tokens <= limit
    details = filled.result.details
    assert details["stop_reason"] == "budget" and not details["adaptive"]
    assert details["budget_tokens"] == limit and details["filled"] == round(filled.compressed_tokens / limit, 4)
    assert "Biscuit" in filled.passages[0]["text"]


def test_an_invalid_flag_is_refused_even_after_a_valid_one_was_cached():
    from promptshrink.api import get_compressor

    assert get_compressor("acc_rag", adaptive=True).adaptive is True
    with pytest.raises(ps.InvalidInputError, match="adaptive"):
        get_compressor("acc_rag", adaptive=1)  # 1 == True: the instance cache must not hand it over
