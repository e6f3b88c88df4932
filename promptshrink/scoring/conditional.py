"""Conditional likelihoods from a causal LM: how well a document predicts a question (LongLLMLingua ranking)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..model_loading import DEFAULT_LM, load_causal_lm
from .lm import lm_window, start_ids

RESTRICT = "We can get the answer to this question in the given documents."


def question_loglik(
    documents: Sequence[str],
    question: str,
    model_name: str = DEFAULT_LM,
    batch_size: int = 8,
    max_window: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Mean log p(question + restrict sentence | document) per document (higher = more relevant).

    A document longer than the window keeps its end. Batches are right-padded: with causal attention the padding
    after a sequence cannot change its logits, so no mask is needed.
    """
    import torch

    model, tokenizer = load_causal_lm(model_name)
    tail = tokenizer(f"\n\nQuestion: {question}\n{RESTRICT}", add_special_tokens=False)["input_ids"]
    head = start_ids(tokenizer)
    room = max(1, lm_window(model, max_window) - len(head) - len(tail))
    bodies = [ids[-room:] for ids in tokenizer(list(documents), add_special_tokens=False)["input_ids"]]
    out = np.zeros(len(documents))
    order = sorted(range(len(documents)), key=lambda i: len(bodies[i]))
    pad = head[0]
    decoder, head_layer = model.get_decoder(), model.get_output_embeddings()
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        rows = [head + bodies[i] + tail for i in batch]
        width = max(len(r) for r in rows)
        inputs = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
        with torch.inference_mode():  # the LM head only where the question is predicted, not on every position
            hidden = decoder(input_ids=inputs).last_hidden_state
            spans = [(row, len(r) - len(tail) - 1, len(r) - 1) for row, r in enumerate(rows)]
            picked = torch.stack([hidden[row, lo:hi] for row, lo, hi in spans])  # [batch, len(tail), hidden]
            targets = torch.stack([inputs[row, lo + 1 : hi + 1] for row, lo, hi in spans]).unsqueeze(-1)
            logp = torch.log_softmax(head_layer(picked), dim=-1, dtype=torch.float32).gather(2, targets)
        out[batch] = logp[..., 0].mean(dim=1).cpu().numpy()
        if progress:
            progress(min(b + batch_size, len(order)), len(order))
    return out
