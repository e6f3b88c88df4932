"""Selective Context with the real bundled causal LM."""

from __future__ import annotations

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.scoring.lm import surprisal, to_units
from promptshrink.segmentation import segment
from tests.support.models import needs_lm

pytestmark = needs_lm


def test_surprisal_is_low_for_predictable_text():
    s = surprisal("The United States of America is a country in North America.")
    predictable = surprisal("one two three four five six seven eight nine ten eleven twelve")
    assert np.all(np.isfinite(s.values)) and len(s.values) == len(s.offsets)
    assert predictable.values[-6:].mean() < s.values.mean()


def test_windows_with_overlap_match_a_single_pass_where_context_fits(article):
    text = article[:3000]
    whole = surprisal(text, max_window=1024)
    windowed = surprisal(text, max_window=256, overlap=64)
    assert len(whole.values) == len(windowed.values)
    # the first window sees the same context (bf16 matmuls differ slightly with sequence length)
    assert np.allclose(whole.values[:100], windowed.values[:100], rtol=0.05, atol=0.15)
    assert np.corrcoef(whole.values, windowed.values)[0, 1] > 0.9


def test_unit_scores_sum_token_scores(article):
    text = article[:800]
    units = segment(text, "sentence")
    info = surprisal(text)
    per_unit = to_units(info, units, "sum")
    assert per_unit.sum() == pytest.approx(info.values.sum())


def test_three_thousand_words_at_half_rate(article):
    r = ps.compress(article, "selective_context", rate=0.5)
    assert 0.45 <= r.ratio <= 0.5
    assert r.compressed_tokens == ps.get_tokenizer().count(r.text)


@pytest.mark.parametrize("unit", ["token", "phrase", "sentence"])
def test_units_and_target_tokens(article, unit):
    text = article[:4000]
    r = ps.compress(text, "selective_context", target_tokens=300, unit=unit, tokenizer="o200k_base")
    assert r.compressed_tokens <= 300
    kept = [s for s in r.segments if s.kept]
    assert r.text == "".join(s.text for s in kept).lstrip()


def test_keep_and_numbers_survive(article):
    text = article[:3000]
    r = ps.compress(text, "selective_context", rate=0.3, keep=["Challenger heroes"], protect_numbers=True)
    assert "Challenger heroes" in r.text
    assert "10th" in text and "10th" in r.text


def test_question_aware_keeps_the_answer_in_the_middle():
    filler = [
        "The committee met on Tuesday to review the annual budget and several routine items.",
        "Members discussed the schedule for the spring maintenance of the public library.",
        "A short presentation covered the new parking arrangements near the town hall.",
    ]
    answer = "The lighthouse keeper's cat is named Biscuit and it sleeps in the lantern room."
    text = " ".join(filler * 3 + [answer] + filler * 3)
    r = ps.compress(text, "selective_context", rate=0.25, unit="sentence", question="What is the name of the cat?")
    assert "Biscuit" in r.text


def test_deterministic(article):
    a = ps.compress(article[:2000], "selective_context", rate=0.5)
    b = ps.compress(article[:2000], "selective_context", rate=0.5)
    assert a.text == b.text


def test_unknown_model_says_what_to_install():
    with pytest.raises(ps.ModelUnavailableError, match="Offline, use a bundled model"):
        ps.compress("Some text to compress here.", "selective_context", model="no-such-org/no-such-model")
