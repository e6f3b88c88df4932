"""`fill.top_up`: a whole-unit selection is brought up to 90-100% of its budget with a word-cut unit."""

from __future__ import annotations

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.fill import FILL_SHARE, top_up
from promptshrink.segmentation import segment
from promptshrink.selection import render, select_units

TEXT = (
    "The committee met on Tuesday to review the annual budget and a long list of routine items for the spring. "
    "Parking is free. "
    "The public library, which opened in 1921 and holds about 40,000 books, will close on Mondays for maintenance."
)


@pytest.mark.parametrize("limit", [4, 9, 17, 25, 30])
def test_fills_the_gap_with_the_best_left_out_sentence_cut_at_a_word(limit):
    tok = ps.get_tokenizer("cl100k_base")
    units = segment(TEXT, "sentence", [])
    scores = np.asarray([0.1, 0.5, 0.9])  # the library sentence is best but does not fit below 30 tokens
    keep, kept = select_units(units, scores, limit, tok)
    new_units, new_scores, new_keep, count = top_up(units, scores, keep, limit, tok, kept)
    text = render(new_units, new_keep)
    assert FILL_SHARE * limit <= count == tok.count(text) <= limit
    assert "".join(u.text for u in new_units) == TEXT and len(new_scores) == len(new_units)
    assert all(u.text == TEXT[u.start : u.end] for u in new_units)
    if kept < FILL_SHARE * limit:  # the cut is a prefix of the best sentence left out, ending at a word
        cut = next(u for u, k, s in zip(new_units, new_keep, new_scores) if k and s == 0.9)
        assert units[2].text.startswith(cut.text) and cut.text.endswith(" ")


def test_a_full_selection_and_explicit_drops_are_left_alone():
    tok = ps.get_tokenizer("cl100k_base")
    units = segment(TEXT, "sentence", [])
    keep = [True, True, True]
    assert top_up(units, np.zeros(3), keep, 100, tok)[2] == keep
    scores = np.asarray([0.1, 0.5, -np.inf])  # a scorer's explicit drop is never used to fill
    keep, kept = select_units(units, scores, 25, tok)
    assert top_up(units, scores, keep, 25, tok, kept)[2] == keep
