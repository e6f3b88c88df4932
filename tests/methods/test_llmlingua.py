"""Our LLMLingua and LongLLMLingua implementations with the bundled LM."""

from __future__ import annotations

import pytest

import promptshrink as ps
from tests.support.models import needs_lm
from tests.support.texts import MIDDLE

pytestmark = needs_lm
METHODS = ["llmlingua", "longllmlingua"]


@pytest.fixture(scope="module", params=METHODS)
def half(request, article):
    return ps.compress(article, request.param, rate=0.5)


def test_three_thousand_words_at_half_rate(half):
    assert 0.45 <= half.ratio <= 0.5
    kept = [s for s in half.segments if s.kept]
    assert [s.start for s in kept] == sorted(s.start for s in kept)
    assert half.text == "".join(s.text for s in kept).lstrip()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tokenizer", ["cl100k_base", "o200k_base"])
def test_target_tokens_never_exceeded(article, method, tokenizer):
    for budget in (25, 180):
        r = ps.compress(article[:2500], method, target_tokens=budget, tokenizer=tokenizer)
        assert ps.get_tokenizer(tokenizer).count(r.text) <= budget


@pytest.mark.parametrize("method", METHODS)
def test_protected_spans_survive(article, method):
    r = ps.compress(article[:3000], method, rate=0.3, keep=["Challenger heroes"], protect_numbers=True)
    assert "Challenger heroes" in r.text and "10th" in r.text


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(article, method):
    a = ps.compress(article[:2000], method, rate=0.4, question="Who are the heroes?")
    b = ps.compress(article[:2000], method, rate=0.4, question="Who are the heroes?")
    assert a.text == b.text


def test_iterative_pass_spends_the_budget_over_the_whole_text(article):
    r = ps.compress(article[:4000], "llmlingua", rate=0.5, segment_tokens=64)
    kept = [s for s in r.segments if s.kept]
    half = len(article[:4000]) // 2
    early, late = sum(s.start < half for s in kept), sum(s.start >= half for s in kept)
    assert min(early, late) > 0.3 * len(kept)


def test_question_aware_ranking_keeps_the_answer_in_the_middle():
    r = ps.compress(MIDDLE, "longllmlingua", rate=0.3, question="What is the name of the cat?", doc_sentences=1)
    assert "Biscuit" in r.text
    relevance = r.details["document_relevance"]
    assert max(range(len(relevance)), key=relevance.__getitem__) == 9  # the answer sentence ranks first


def test_reorder_puts_the_most_relevant_document_first_and_says_so():
    paragraphs = "\n\n".join(FILL for FILL in [MIDDLE.split(" The lighthouse")[0], ANSWER_PARAGRAPH, "The end."])
    r = ps.compress(paragraphs, "longllmlingua", rate=0.6, question="What is the name of the cat?", reorder=True)
    assert r.details["extractive_order"] is False and r.details["document_order"][0] == 1
    assert r.text.startswith("The lighthouse keeper") and "Biscuit" in r.text.split("\n\n")[0]
    assert r.compressed_tokens <= int(0.6 * r.original_tokens)
    plain = ps.compress(paragraphs, "longllmlingua", rate=0.6, question="What is the name of the cat?")
    assert "extractive_order" not in plain.details


ANSWER_PARAGRAPH = "The lighthouse keeper's cat is named Biscuit and it sleeps in the lantern room."


@pytest.mark.parametrize(
    "method,options",
    [
        ("llmlingua", {"coarse_share": 0.9}),
        ("llmlingua", {"segment_tokens": 0}),
        ("llmlingua", {"context_tokens": "many"}),
        ("longllmlingua", {"dynamic_ratio": 2}),
        ("longllmlingua", {"reorder": "yes"}),
        ("longllmlingua", {"doc_sentences": 0}),
    ],
)
def test_bad_parameters_are_clean_errors(method, options):
    with pytest.raises(ps.InvalidInputError):
        ps.compress("Some text to compress here. And a second sentence.", method, **options)


MULTIDOC = [
    "The harbour town holds a fish market every Saturday morning . Traders sell cod , herring and crabs from stalls .",
    "Visitors to the old mill often ask about its history . "
    "The old mill was built in 1820 and the museum opens at nine .",
    "At night a large grey goose called Harold guards the grounds and chases away any stranger who comes near .",
    "The railway line to the coast was opened in 1871 . Steam trains ran on it until the line was electrified .",
]


def test_top_ranked_document_stays_almost_whole_at_half_rate():
    """Coarse stage keeps documents up to the budget, so the fine stage leaves the best one whole (a 1.5x share
    spread the pruning over every document and cut the answer spans of multi-document QA)."""
    question = "Who keeps watch over the old mill at night , sorry , which animal ?"
    r = ps.compress_passages(MULTIDOC, question, method="longllmlingua", rate=0.5)
    relevance = r.result.details["document_relevance"]
    top = r.passages[max(range(len(relevance)), key=relevance.__getitem__)]
    assert top["text"].split() == top["original_text"].split()  # 1.5x share: 92% of its words
    assert sum(p["kept"] for p in r.passages) <= len(MULTIDOC) // 2  # 1.5x share: 3 of 4 documents


def test_pruned_context_keeping_everything_reads_like_one_pass(article):
    """The KV-cache reuse is exact when nothing is dropped: scores match one forward pass over the whole text."""
    import numpy as np

    from promptshrink.model_loading import load_causal_lm
    from promptshrink.scoring.kv_context import PrunedContext
    from promptshrink.scoring.lm import start_ids, surprisal

    model, tokenizer = load_causal_lm()
    ids = tokenizer(article[:1500], add_special_tokens=False)["input_ids"]
    context = PrunedContext(model, start_ids(tokenizer), context_tokens=len(ids))
    bits = []
    for piece in (ids[:120], ids[120:250], ids[250:]):
        bits.append(context.read(piece))
        context.keep(piece, np.ones(len(piece), dtype=bool))
    whole = surprisal(article[:1500]).values
    assert np.corrcoef(np.concatenate(bits), whole)[0, 1] > 0.99


def test_pruned_context_drops_tokens_and_rereads_past_the_position_limit(article):
    """Dropped tokens stop conditioning later pieces; a context re-read from position 0 scores about the same."""
    import numpy as np

    from promptshrink.model_loading import load_causal_lm
    from promptshrink.scoring.kv_context import PrunedContext
    from promptshrink.scoring.lm import start_ids

    model, tokenizer = load_causal_lm()
    ids = tokenizer(article[:1200], add_special_tokens=False)["input_ids"]
    first, second = ids[:100], ids[100:]

    def second_piece(kept: np.ndarray, max_position: int | None = None) -> np.ndarray:
        context = PrunedContext(model, start_ids(tokenizer), context_tokens=64)
        context.read(first)
        context.keep(first, kept)
        if max_position:
            context.max_position = max_position
        return context.read(second)

    everything, alternate = np.ones(len(first), dtype=bool), np.arange(len(first)) % 2 == 0
    assert np.abs(second_piece(everything)[:20] - second_piece(alternate)[:20]).max() > 0.5
    reread = second_piece(alternate, max_position=len(ids))
    assert np.corrcoef(second_piece(alternate), reread)[0, 1] > 0.95


# The model runs in bf16 on CPUs with AMX/AVX512-BF16 and in fp32 elsewhere: both are checked on every machine.
# In bf16 a padded batch and a batch of one round differently (8 mantissa bits: each log-prob is good to about
# 2**-8 of its size), so the bf16 tolerance is two such steps of the value; fp32 agrees to 1e-3.
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_question_loglik_equals_the_full_logits_reference_and_ranks_the_answering_document(dtype, monkeypatch):
    import torch

    monkeypatch.setenv("PROMPTSHRINK_DTYPE", dtype)

    from promptshrink.model_loading import load_causal_lm
    from promptshrink.scoring.conditional import RESTRICT, question_loglik
    from promptshrink.scoring.lm import start_ids

    docs = [
        "The bakery on Elm Street sells rye bread and croissants every morning.",
        "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
        "Rain is expected on Tuesday; the football match may be moved indoors.",
    ]
    question = "In which year did Marie Curie win the Nobel Prize in Chemistry?"
    got = question_loglik(docs, question, batch_size=2)  # a padded batch and a batch of one
    model, tokenizer = load_causal_lm()
    tail = tokenizer(f"\n\nQuestion: {question}\n{RESTRICT}", add_special_tokens=False)["input_ids"]
    for doc, value in zip(docs, got):
        ids = start_ids(tokenizer) + tokenizer(doc, add_special_tokens=False)["input_ids"] + tail
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        ref = logp[len(ids) - len(tail) - 1 : -1].gather(1, torch.tensor(tail)[:, None]).mean()
        tolerance = 1e-3 if dtype == "float32" else 2 * 2**-8 * abs(float(ref))
        assert value == pytest.approx(float(ref), abs=tolerance)
    assert got.argmax() == 1
