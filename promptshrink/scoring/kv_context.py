"""Causal-LM self-information of text read piece by piece, conditioned on a pruned context kept in a KV cache."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .lm import LN2


class PrunedContext:
    """A causal LM reading text in pieces; after each piece the caller says which of its tokens stay in context.

    The context is the start token plus the last ``context_tokens`` kept tokens. Their keys/values stay in a KV
    cache as they were computed when the piece was read (having seen the piece's dropped tokens too, as in the
    ``llmlingua`` package), so each token goes through the model once. The last kept token is held back and read
    again in front of the next piece, so that piece's first token is predicted from the kept context. Positions
    are those of the original text (RoPE sees the true distances); if they would pass the LM's limit, the context
    is read again from position 0.
    """

    def __init__(self, model: object, head: Sequence[int], context_tokens: int) -> None:
        self.model = model
        self.context_tokens = context_tokens
        self.max_position = int(getattr(model.config, "max_position_embeddings", 2048))  # type: ignore[attr-defined]
        self.layers: list[tuple[object, object]] = []  # keys/values of ``cached``, then those of the last read
        self.cached: list[int] = []  # token ids in the cache and their positions
        self.cached_at: list[int] = []
        self.pending = list(head)  # tokens to read in front of the next piece and their positions
        self.pending_at = list(range(len(head)))
        self.position = len(head)  # position of the next piece's first token

    def read(self, piece: Sequence[int]) -> np.ndarray:
        """-log2 P(token | kept context, earlier tokens of the piece) of every token of ``piece``."""
        import torch
        from transformers import DynamicCache

        if not piece:
            return np.zeros(0)
        if self.position + len(piece) > self.max_position:
            self.pending, self.cached, self.cached_at, self.layers = self.cached + self.pending, [], [], []
            self.pending_at, self.position = list(range(len(self.pending))), len(self.pending)
        device = self.model.device  # type: ignore[attr-defined]
        inputs = torch.tensor([self.pending + list(piece)], device=device)
        positions = torch.tensor(
            [self.pending_at + list(range(self.position, self.position + len(piece)))], device=device
        )
        past = DynamicCache(self.layers) if self.layers else DynamicCache()
        with torch.inference_mode():
            logits = self.model(  # type: ignore[operator]
                input_ids=inputs, position_ids=positions, cache=past, use_cache=True, logits_to_keep=len(piece) + 1
            ).logits[0, :-1]
            targets = inputs[0, inputs.shape[1] - len(piece) :, None]
            logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32).gather(1, targets)[:, 0]
        self.layers = [(layer.keys, layer.values) for layer in past.layers]
        return -logp.cpu().numpy() / LN2

    def keep(self, piece: Sequence[int], kept: np.ndarray) -> None:
        """After ``read(piece)``: the tokens of ``piece`` flagged in ``kept`` stay in the context, the others leave."""
        import torch

        if not len(piece):
            return
        ids = self.cached + self.pending + list(piece)
        at = self.cached_at + self.pending_at + list(range(self.position, self.position + len(piece)))
        earlier = len(ids) - len(piece)
        index = list(range(earlier)) + [earlier + int(j) for j in np.flatnonzero(kept)]
        index = index[:1] + index[1:][-self.context_tokens :]
        self.pending, self.pending_at = [ids[index[-1]]], [at[index[-1]]]
        index = index[:-1]
        self.cached, self.cached_at = [ids[i] for i in index], [at[i] for i in index]
        rows = torch.tensor(index, dtype=torch.long, device=self.model.device)  # type: ignore[attr-defined]
        self.layers = [(k.index_select(2, rows), v.index_select(2, rows)) for k, v in self.layers] if index else []
        self.position += len(piece)
