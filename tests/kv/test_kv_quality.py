"""KV presses on the bundled small LM (skipped when the `default-lm` package is not installed)."""

from __future__ import annotations

import pytest
import torch

from promptshrink import kv
from tests.support.models import lm_available

pytestmark = pytest.mark.skipif(not lm_available(), reason="bundled default-lm not installed (see models/README.md)")

QUESTION = "\nWhat is the secret passkey? The secret passkey is"


@pytest.fixture(scope="module")
def lm():  # noqa: ANN201
    from promptshrink.model_loading import load_causal_lm

    return load_causal_lm("default-lm")


def test_presses_on_bundled_lm(lm, article: str) -> None:  # noqa: ANN001
    model, tok = lm
    context = article[:2500] + " The secret passkey is 48213. " + article[2500:4000]
    full = kv.generate(model, tok, context, QUESTION, press=kv.SnapKVPress(ratio=1.0), max_new_tokens=6)
    assert full == kv.generate(model, tok, context, QUESTION, press=None, max_new_tokens=6)
    assert "48213" in full
    ids = tok(context, return_tensors="pt").input_ids
    cache = kv.prefill(model, ids, kv.StreamingLLMPress(ratio=0.25))
    assert cache.layers[0].keys.shape[-2] == round(ids.shape[1] * 0.25)
    assert torch.isfinite(cache.layers[-1].values).all()


def test_question_aware_snapkv_keeps_the_needle(lm, article: str) -> None:  # noqa: ANN001
    """The needle sits in the first sixth of ~890 tokens, outside a recency window of half the context, so only a
    press scored by the question can keep it at ratio 0.5 (query-agnostic SnapKV loses it here too)."""
    model, tok = lm
    context = article[:1200] + " The secret passkey is 48213. " + article[1200:4000]

    def answer(press: str | None, question_aware: bool) -> str:
        return kv.generate(model, tok, context, QUESTION, press, 0.5, 6, question_aware=question_aware)

    assert "48213" in answer(None, question_aware=True)
    assert "48213" not in answer("streaming_llm", question_aware=True)
    assert "48213" in answer("snapkv", question_aware=True)
