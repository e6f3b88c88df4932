"""EHPC: calibration of evaluator heads, early-exit attention, and compression with the bundled LM."""

from __future__ import annotations

import json

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.cli import build_parser
from promptshrink.model_loading import load_causal_lm, manifest
from promptshrink.scoring import evaluator_heads
from promptshrink.scoring.attention import pool, query_attention
from tests.support.models import needs_lm
from tests.support.texts import MIDDLE

pytestmark = needs_lm


@pytest.fixture(scope="module")
def half(article):
    return ps.compress(article, "ehpc", rate=0.5)


def test_calibration_is_stable_and_finds_concentrated_heads():
    a = evaluator_heads.calibrate(probes=3, context_chars=600, top_k=4)
    b = evaluator_heads.calibrate(probes=3, context_chars=600, top_k=4)
    assert a["heads"] == b["heads"] and a["scores"] == b["scores"]
    scores = np.asarray(a["scores"])
    best = max(scores[layer, head] for layer, head in a["heads"])
    assert best > 5 * np.median(scores)  # a few heads put far more attention on the needle than a typical head
    assert a["deepest_layer"] == max(layer for layer, _ in a["heads"]) < a["layers"]


def test_committed_calibration_matches_the_model():
    data = json.loads(evaluator_heads.heads_path("default-lm").read_text())
    assert data["model_id"] == manifest()["default-lm"].hf_id
    heads = evaluator_heads.load("default-lm")
    assert sum(len(h) for h in heads.values()) == data["probe"]["top_k"]
    assert max(heads) == data["deepest_layer"] < data["layers"] - 1  # early exit skips layers


def test_max_layer_picks_the_best_heads_no_deeper_than_the_cap():
    data = json.loads(evaluator_heads.heads_path("default-lm").read_text())
    scores = np.asarray(data["scores"])
    for cap in (3, data["deepest_layer"] - 1):
        heads = evaluator_heads.load("default-lm", max_layer=cap)
        pairs = [(layer, h) for layer, hs in heads.items() for h in hs]
        assert len(pairs) == data["probe"]["top_k"] and max(heads) <= cap
        cutoff = min(scores[layer, h] for layer, h in pairs)
        assert (scores[: cap + 1] > cutoff).sum() < len(pairs)  # no unpicked head within the cap scores higher
    full = evaluator_heads.load("default-lm", max_layer=data["deepest_layer"])  # the stored selection rule
    assert sorted((layer, h) for layer, hs in full.items() for h in hs) == sorted(map(tuple, data["heads"]))
    with pytest.raises(ps.InvalidInputError):
        evaluator_heads.load("default-lm", max_layer=data["layers"])


def test_shallow_ehpc_runs_fewer_layers_and_still_compresses(article):
    assert max(ps.get_compressor("ehpc", max_layer=5).heads) <= 5
    r = ps.compress(article[:3000], "ehpc", rate=0.5, question="What about taxes?", max_layer=5)
    assert 0 < r.compressed_tokens <= r.original_tokens * 0.5 + 1


def test_window_attention_matches_eager_attention(article):
    import torch

    model, tokenizer = load_causal_lm("default-lm")
    eager, _ = load_causal_lm("default-lm", attention="eager")
    ids = tokenizer(article[:700])["input_ids"]
    heads = {1: [0, 4], 3: [8]}
    with torch.inference_mode():
        att = eager(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    ref = np.stack([att[layer][0, h, -8:].float().sum(0).numpy() for layer in (1, 3) for h in heads[layer]])
    got = query_attention(model, ids, 8, heads)
    assert got.shape == ref.shape
    assert np.allclose(got.sum(axis=1), 8, atol=0.05)
    assert np.abs(got - ref).max() < 0.1  # bf16 rounding


def test_pooling():
    x = np.array([0.0, 0, 5, 0, 0, 0, 0])
    assert list(pool(x, 3, "max")) == [0, 5, 5, 5, 0, 0, 0]
    assert pool(x, 3, "avg")[2] == pytest.approx(5 / 3)
    assert list(pool(x, 1)) == list(x)


def test_three_thousand_words_at_half_rate(half, article):
    assert 0.45 <= half.ratio <= 0.5
    kept = [s for s in half.segments if s.kept]
    assert [s.start for s in kept] == sorted(s.start for s in kept)
    assert half.text == "".join(s.text for s in kept).lstrip()


@pytest.mark.parametrize("tokenizer", ["cl100k_base", "o200k_base"])
@pytest.mark.parametrize("budget", [30, 200])
def test_target_tokens_never_exceeded(article, tokenizer, budget):
    r = ps.compress(article[:3000], "ehpc", target_tokens=budget, tokenizer=tokenizer, question="What about taxes?")
    assert ps.get_tokenizer(tokenizer).count(r.text) <= budget


def test_long_input_is_read_in_windows(article):
    r = ps.compress(article[:6000], "ehpc", rate=0.5, max_window=256, question="Who are the heroes?")
    assert 0.4 <= r.ratio <= 0.5 and all(s.score is not None for s in r.segments)


def test_protected_spans_survive(article):
    r = ps.compress(article[:3000], "ehpc", rate=0.3, keep=["Challenger heroes"], protect_numbers=True)
    assert "Challenger heroes" in r.text and "10th" in r.text


def test_question_keeps_the_answer_in_the_middle():
    r = ps.compress(MIDDLE, "ehpc", rate=0.3, question="What is the name of the cat?")
    assert "Biscuit" in r.text


def test_deterministic(article):
    a = ps.compress(article[:2000], "ehpc", rate=0.4)
    b = ps.compress(article[:2000], "ehpc", rate=0.4)
    assert a.text == b.text


def test_missing_calibration_names_the_command():
    with pytest.raises(ps.ModelUnavailableError, match="calibrate-ehpc"):
        ps.compress("Some text to compress here.", "ehpc", model="no-such-org/no-such-model")


@pytest.mark.parametrize("options", [{"window": 0}, {"kernel": -1}, {"pooling": "median"}, {"max_window": 8}])
def test_bad_parameters_are_clean_errors(options):
    with pytest.raises(ps.InvalidInputError):
        ps.compress("Some text to compress here. And a second sentence.", "ehpc", **options)


def test_cli_has_the_calibration_command():
    args = build_parser().parse_args(["calibrate-ehpc", "--model", "default-lm", "--top-k", "4"])
    assert args.model == "default-lm" and args.top_k == 4 and callable(args.func)
