"""The lean request path: one-encode unit costs, the direct TF-IDF, and the word segmentation shortcut."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptshrink as ps
from promptshrink.scoring.tfidf import terms, tfidf_relevance
from promptshrink.segmentation import segment
from promptshrink.target_tokenizer import span_counts

MIXED = "Straße — “quoted” 日本語のテキスト, naïve café: 3.5 % of ☃ costs $12. Ünïcödé ends here.\n\nNext para."


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
@pytest.mark.parametrize("level", ["token", "word", "sentence"])
def test_count_spans_matches_tiktoken_offsets(name, level, article):
    tok = ps.get_tokenizer(name)
    text = MIXED + " " + article[:3000]
    starts = [u.start for u in segment(text, level)]
    total, costs = tok.count_spans(text, starts)
    ids = tok.encode(text)
    assert total == len(ids) == sum(costs)
    assert costs == span_counts(tok.encoding.decode_with_offsets(ids)[1], starts)


def test_count_spans_of_a_fast_hf_tokenizer_matches_its_offsets():
    pytest.importorskip("transformers")
    from tests.support.models import lm_available

    if not lm_available():
        pytest.skip("bundled LM package not installed")
    tok = ps.get_tokenizer("hf:default-lm")
    starts = [u.start for u in segment(MIXED, "word")]
    total, costs = tok.count_spans(MIXED, starts)
    assert total == tok.count(MIXED) == sum(costs)
    assert all(c >= 1 for c in costs[:3])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=12), st.none() | st.text(max_size=30))
def test_tfidf_equals_scikit_learn(texts, query):
    from sklearn.feature_extraction.text import TfidfVectorizer

    stripped = [t.strip() for t in texts]
    vectorizer = TfidfVectorizer(
        sublinear_tf=True, tokenizer=terms, token_pattern=None, lowercase=False, stop_words="english"
    )
    try:
        matrix = vectorizer.fit_transform(stripped + ([query] if query else []))
    except ValueError:
        expected = np.zeros(len(texts))
    else:
        doc = matrix[: len(texts)]
        target = np.asarray(matrix[len(texts)].todense() if query else doc.mean(axis=0)).ravel()
        norm = np.linalg.norm(target)
        expected = np.zeros(len(texts)) if norm == 0 else np.asarray(doc @ target).ravel() / norm
    np.testing.assert_allclose(tfidf_relevance(texts, query), expected, atol=1e-12)


def test_word_units_tile_the_text(article):
    text = "  lead " + article[:2000] + " \n trailing  "
    units = segment(text, "word")
    assert "".join(u.text for u in units) == text
    assert all(text[u.start : u.end] == u.text for u in units)


@pytest.mark.parametrize("method", ["keep_first", "tfidf"])
def test_kept_tokens_are_the_output_count(method, article):
    r = ps.compress(MIXED + article, method, rate=0.3, question="What about taxes?")
    tok = ps.get_tokenizer()
    assert r.compressed_tokens == tok.count(r.text) <= int(0.3 * r.original_tokens)
    assert r.original_tokens == tok.count(MIXED + article)
