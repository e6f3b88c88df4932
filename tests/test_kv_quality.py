"""KV presses on the bundled small LM (skipped when the `default-lm` package is not installed)."""

from __future__ import annotations

import pytest
import torch

from promptshrink import kv
from tests.conftest import lm_available

pytestmark = pytest.mark.skipif(not lm_available(), reason="bundled default-lm not installed (see models/README.md)")


def test_presses_on_bundled_lm(article: str) -> None:
    from promptshrink.model_loading import load_causal_lm

    model, tok = load_causal_lm("default-lm")
    context = article[:2500] + " The secret passkey is 48213. " + article[2500:4000]
    question = "\nWhat is the secret passkey? The secret passkey is"
    full = kv.generate(model, tok, context, question, press=kv.SnapKVPress(ratio=1.0), max_new_tokens=6)
    assert full == kv.generate(model, tok, context, question, press=None, max_new_tokens=6)
    snap = kv.generate(model, tok, context, question, press="snapkv", ratio=0.5, max_new_tokens=6)
    assert "48213" in full and isinstance(snap, str) and snap  # retention under compression: kv_quality.py
    ids = tok(context, return_tensors="pt").input_ids
    cache = kv.prefill(model, ids, kv.StreamingLLMPress(ratio=0.25))
    assert cache.layers[0].keys.shape[-2] == round(ids.shape[1] * 0.25)
    assert torch.isfinite(cache.layers[-1].values).all()
