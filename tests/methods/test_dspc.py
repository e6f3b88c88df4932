"""DSPC with the real bundled LMs: budgets, order, protected spans, question awareness, signals, errors."""

from __future__ import annotations

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.scoring.cross_model import loss_difference
from promptshrink.scoring.normalise import normalise
from promptshrink.scoring.position import positional_importance
from promptshrink.segmentation import segment
from tests.support.models import needs_lm
from tests.support.texts import MIDDLE

pytestmark = needs_lm
FAST = {"large_model": None}


@pytest.fixture(scope="module")
def half(article):
    return ps.compress(article, "dspc", rate=0.5, **FAST)


def test_three_thousand_words_at_half_rate(half):
    assert 0.45 <= half.ratio <= 0.5
    assert half.compressed_tokens == ps.get_tokenizer().count(half.text)


def test_order_is_kept_and_text_is_the_kept_segments(half, article):
    kept = [s for s in half.segments if s.kept]
    assert [s.start for s in kept] == sorted(s.start for s in kept)
    assert half.text == "".join(s.text for s in kept).lstrip()
    assert all(article[s.start : s.end] == s.text for s in half.segments)


def test_coarse_stage_drops_whole_sentences(half):
    unscored = [s for s in half.segments if s.score is None]
    assert unscored and not any(s.kept for s in unscored if not s.forced)


@pytest.mark.parametrize("tokenizer", ["cl100k_base", "o200k_base"])
@pytest.mark.parametrize("budget", [40, 150])
def test_target_tokens_never_exceeded(article, tokenizer, budget):
    r = ps.compress(article[:2500], "dspc", target_tokens=budget, tokenizer=tokenizer, **FAST)
    assert ps.get_tokenizer(tokenizer).count(r.text) <= budget


def test_protected_spans_survive(article):
    r = ps.compress(article[:3000], "dspc", rate=0.3, keep=["Challenger heroes"], protect_numbers=True, **FAST)
    assert "Challenger heroes" in r.text and "10th" in r.text


def test_question_keeps_the_answer_in_the_middle():
    r = ps.compress(MIDDLE, "dspc", rate=0.3, question="What is the name of the cat?", **FAST)
    assert "Biscuit" in r.text


def test_deterministic(article):
    a = ps.compress(article[:2000], "dspc", rate=0.4, **FAST)
    b = ps.compress(article[:2000], "dspc", rate=0.4, **FAST)
    assert a.text == b.text and [s.score for s in a.segments] == [s.score for s in b.segments]


def test_cross_model_loss_difference_aligns_two_tokenizers(article):
    text = article[:600]
    units = segment(text, "word")
    diff = loss_difference(text, units, "default-lm", "large-lm")
    assert diff.shape == (len(units),) and np.all(np.isfinite(diff))
    assert diff.std() > 0
    r = ps.compress(text, "dspc", target_tokens=60)
    assert r.compressed_tokens <= 60


def test_positional_prior_is_u_shaped_and_rises_near_the_question():
    text = " ".join(f"w{i}" for i in range(200))
    units = segment(text, "word")
    p = positional_importance(units, text)
    middle = len(units) // 2
    assert p[0] > p[middle] < p[-1]
    near = positional_importance(units, text, question="w100")
    assert near[middle] > p[middle]


def test_rank_normalisation_is_in_unit_range_and_order_preserving():
    x = np.array([3.0, -1.0, 10.0, 3.0])
    r = normalise(x)
    assert r.min() == 0 and r.max() == 1 and r[0] == r[3] and r[1] < r[0] < r[2]


@pytest.mark.parametrize(
    "options",
    [
        {"attention_weight": -1},
        {"attention_weight": 0, "loss_weight": 0, "position_weight": 0},
        {"coarse_share": 0.5},
        {"normalisation": "minmax"},
        {"position_edge": 0},
        {"tail_tokens": 0},
        {"unit": "paragraph"},
    ],
)
def test_bad_parameters_are_clean_errors(options):
    with pytest.raises(ps.InvalidInputError):
        ps.compress("Some text to compress here. And a second sentence.", "dspc", **options)


PRIME = (
    "The concept of prime number is so important that it has been generalized in different ways in various branches"
    ' of mathematics . Generally , " prime " indicates minimality or indecomposability , in an appropriate sense . '
    "For example , the prime field is the smallest subfield of a field F containing both 0 and 1 . "
    "It is either Q or the finite field with p elements , whence the name . "
    "For example , in knot theory , a prime knot is a knot that is indecomposable in the sense that it cannot be "
    "written as the knot sum of two nontrivial knots ."
)


def test_disfluent_question_keeps_the_answer_sentence_whole():
    """DisflQA-like: the coarse stage filters sentences down to the budget, so the answer sentence is not cut by
    word pruning (a 1.5x share kept most sentences and pruned words from all of them, answer spans included)."""
    question = "What field is the smallest subfield , no wait , which field is either Q or a finite field ?"
    r = ps.compress(PRIME, "dspc", rate=0.5, question=question, **FAST)
    assert "It is either Q or the finite field with p elements , whence the name ." in r.text
    assert r.compressed_tokens <= int(0.5 * r.original_tokens)
