"""REFORM's gather step as text compression: keep the spans whose Q/K/V embeddings are closest to the question."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..model_loading import DEFAULT_LM, load_causal_lm
from ..params import integer, non_empty, number
from ..registry import register
from ..scoring.lm import TokenScores, lm_window, start_ids, to_units, tokenize_with_offsets
from ..segmentation import Unit
from .base import CompressionRequest, ExtractiveCompressor


@register
@dataclass
class ReformCompressor(ExtractiveCompressor):
    """Run ``model`` only up to the layer at relative ``depth`` (early exit), embed every token by that layer's
    pre-RoPE Q/K/V (all KV heads), score it by cosine similarity to the question's mean embedding (or the text's
    last ``window`` tokens'), max-pool over ``kernel`` tokens, and keep the best units; the first and last
    ``edges`` tokens rank first. Long input is read in LM windows, each followed by the question. The KV press
    ``reform`` gathers the same way and then recomputes the kept tokens' cache.
    Reference: "REFORM: Compress, Gather, and Recompute" (efficient long-context processing), 2025.

    Args:
        model: Causal LM (a bundled alias or a local path) whose middle layer gives the embeddings.
        depth: Relative depth in [0, 1] of the embedding layer; the LM runs only that deep.
        window: Trailing tokens whose embeddings stand in for the question when there is none.
        kernel: Odd number of neighbouring tokens the similarity is max-pooled over.
        edges: Leading and trailing tokens of the text ranked first (REFORM keeps the first and last ones).
        max_window: Longest LM window in tokens (>= 64); longer input is read in windows.
    """

    name = "reform"
    summary = "REFORM's gather: spans whose middle-layer Q/K/V embeddings are closest to the question."
    uses_question = True
    default_unit = "word"

    model: str = DEFAULT_LM
    depth: float = 0.5
    window: int = 32
    kernel: int = 5
    edges: int = 4
    max_window: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("model", self.model)
        number("depth", self.depth, 0.0, 1.0)
        integer("window", self.window)
        if integer("kernel", self.kernel) % 2 == 0:
            raise InvalidInputError(f"kernel must be odd (pooling keeps the sequence length), got {self.kernel}")
        integer("edges", self.edges, 0)
        integer("max_window", self.max_window, 64)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        model, tokenizer = load_causal_lm(self.model)
        ids, offsets = tokenize_with_offsets(tokenizer, request.text)
        if request.question:
            q_ids = tokenizer(f"\n\nQuestion: {request.question}\nAnswer:", add_special_tokens=False)["input_ids"]
        else:
            q_ids = ids[-self.window :]
        head, window = start_ids(tokenizer), lm_window(model, self.max_window)
        q_ids = q_ids[-(window // 4) :]
        room = max(1, window - len(head) - len(q_ids))
        scores = np.zeros(len(ids))
        starts = list(range(0, len(ids), room)) or [0]
        for n, s in enumerate(starts):
            chunk = ids[s : s + room]
            sim = similarity(model, head + chunk + q_ids, len(q_ids), self.depth, self.kernel)
            scores[s : s + len(chunk)] = sim[len(head) : len(head) + len(chunk)]
            request.report(n + 1, len(starts))
        if self.edges and len(ids):
            scores[: self.edges] = scores[-self.edges :] = scores.max() + 1.0
        return to_units(TokenScores(offsets, scores), units, "mean")


def similarity(model: object, ids: Sequence[int], n_query: int, depth: float, kernel: int) -> np.ndarray:
    """Similarity of every position of ``ids`` to its last ``n_query`` positions at the layer at ``depth``."""
    import torch

    from ..kv.reform import qkv_embeddings, token_similarity

    base = model.model  # type: ignore[attr-defined]
    layers = base.layers
    target = round(depth * (len(layers) - 1))
    with torch.inference_mode():
        hidden = base.embed_tokens(torch.tensor([list(ids)], device=model.device))  # type: ignore[attr-defined]
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        pe = base.rotary_emb(hidden, position_ids=positions)
        for layer in layers[:target]:
            hidden = layer(hidden, position_embeddings=pe, position_ids=positions)
        emb = qkv_embeddings(layers[target].self_attn, layers[target].input_layernorm(hidden), None)
        return token_similarity(emb, n_query, kernel, len(ids))[0].float().cpu().numpy()
