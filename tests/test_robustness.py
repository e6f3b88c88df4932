"""Library hardening: abusive `keep` lists, lone surrogates, deadlines that stop long methods, and the first use of
every model method from several threads at once (in a fresh process, where the import race lived)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptshrink as ps
from promptshrink.api import build_request
from promptshrink.segmentation import MAX_KEEP, MAX_KEEP_MATCHES, keep_spans
from tests.support import ROOT
from tests.support.models import model_installed, needs_lm

MODEL_METHODS = {
    "selective_context": {},
    "ehpc": {},
    "acc_rag": {},
    "llmlingua": {},
    "longllmlingua": {},
    "dspc": {"large_model": None},
    "scope": {"rewriter": "extractive"},
}


def test_repeated_keep_entries_count_once_and_overlaps_are_all_protected() -> None:
    assert keep_spans("abcd abc", ["abc", "bcd", "abc", ""]) == [(0, 3), (1, 4), (5, 8)]
    text = "a " * 4000
    assert keep_spans(text, ["a"] * 500) == keep_spans(text, ["a"])  # 500 copies: one entry, not a refusal
    r = ps.compress("alpha beta gamma delta. " * 40, "keep_first", rate=0.6, keep=["gamma delta"] * 300)
    assert r.text.count("gamma delta") == 40


@settings(max_examples=80, deadline=None)
@given(
    text=st.text(alphabet="ab c", max_size=60),
    keep=st.lists(st.text(alphabet="ab c", min_size=1, max_size=4), max_size=5),
)
def test_keep_spans_are_exactly_every_occurrence(text: str, keep: list[str]) -> None:
    expected = {(i, i + len(k)) for k in keep for i in range(len(text)) if text.startswith(k, i)}
    found = set(keep_spans(text, keep))
    assert found <= expected
    covered = {p for s, e in found for p in range(s, e)}
    assert covered == {p for s, e in expected for p in range(s, e)}


def test_keep_abuse_is_refused_fast() -> None:
    with pytest.raises(ps.InvalidInputError, match=f"more than {MAX_KEEP_MATCHES} times"):
        ps.compress("a " * 50_000, "keep_first", rate=0.5, keep=["a"] * 200)
    with pytest.raises(ps.InvalidInputError, match=f"at most {MAX_KEEP}"):
        ps.compress("some text here", "keep_first", rate=0.5, keep=[f"k{i}" for i in range(MAX_KEEP + 1)])


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda: ps.compress("abc \ud800 def", "tfidf"), "text"),
        (lambda: ps.compress("abc def. ghi.", "tfidf", question="why \udfff"), "question"),
        (lambda: ps.compress("abc def. ghi.", "tfidf", keep=["\ud83d"]), "keep"),
        (lambda: ps.compress_messages([{"role": "user", "content": "x \ud800 " * 20}], "tfidf", rate=0.5), "messages"),
        (lambda: ps.compress_passages(["ok", "bad \udc00"], "q", "tfidf", rate=0.5), "text"),
    ],
)
def test_lone_surrogates_are_invalid_input(call, where: str) -> None:
    with pytest.raises(ps.InvalidInputError, match=f"{where}.*surrogate"):
        call()


def test_paired_surrogates_and_emoji_are_fine() -> None:
    r = ps.compress("Smile \U0001f600 please. Another sentence here.", "tfidf", rate=1.0)
    assert "\U0001f600" in r.text


def test_content_parts_are_validated() -> None:
    with pytest.raises(ps.InvalidInputError, match=r"content\[0\]"):
        ps.compress_messages([{"role": "user", "content": [{"type": "text", "text": 5}]}], "tfidf", rate=0.5)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ps.InvalidInputError, match="timeout_s"):
        ps.compress("some text", "keep_first", rate=0.5, timeout_s=0)


def test_a_passed_deadline_stops_even_model_free_methods() -> None:
    request = build_request("one two three. four five six.", rate=0.5)
    request.deadline = 0.0  # long past
    with pytest.raises(ps.CompressionTimeoutError) as info:
        ps.get_compressor("tfidf").compress(request)
    assert info.value.code == "timeout" and isinstance(info.value, TimeoutError)


@needs_lm
@pytest.mark.parametrize("method", sorted(MODEL_METHODS))
def test_deadline_stops_a_long_method_between_windows(article: str, method: str) -> None:
    """The deadline passes during the first window/stage: the method stops there instead of finishing."""
    calls: list[tuple[int, int]] = []

    def expire(done: int, total: int) -> None:
        calls.append((done, total))
        request.deadline = 0.0

    request = build_request(article, rate=0.3, question="What happened to Challenger?", progress=expire)
    compressor = ps.get_compressor(method, **MODEL_METHODS[method])
    with pytest.raises(ps.CompressionTimeoutError, match="time limit"):
        compressor.compress(request)
    assert len(calls) == 1, calls  # it stopped at the first check after the deadline
    done, total = calls[0]
    assert done < total


RACE = """
import collections, json, sys, threading
import promptshrink as ps
import promptshrink.model_loading as ml

methods = json.loads(sys.argv[1])
loads = collections.Counter()
real = ml._from_pretrained

def counting(loader, name, **kwargs):  # a spy: counts, then loads for real
    loads[f"{loader.__name__}:{name}:{kwargs.get('attn_implementation')}"] += 1
    return real(loader, name, **kwargs)

ml._from_pretrained = counting
text = ("The committee met on Tuesday to review the annual budget. Members discussed the spring maintenance of the "
        "library. A presentation covered parking near the town hall. ") * 3
errors, threads_per_method = [], 3
start = threading.Barrier(len(methods) * threads_per_method)

def first_use(method, options):
    start.wait()
    try:
        ps.compress(text, method, rate=0.5, question="What did the committee review?", **options)
    except Exception as exc:
        errors.append(f"{method}: {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=first_use, args=item) for item in methods.items() for _ in range(threads_per_method)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"errors": errors, "loads": loads}))
"""


@needs_lm
@pytest.mark.skipif(not model_installed("embedder"), reason="embedder package not installed")
def test_first_use_of_every_model_method_from_many_threads_at_once() -> None:
    """Fresh process (nothing imported yet), 3 threads per method released together: no error, and every model
    is loaded exactly once (the others wait for it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RACE, json.dumps(MODEL_METHODS)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == []
    assert out["loads"] and all(n == 1 for n in out["loads"].values()), out["loads"]
