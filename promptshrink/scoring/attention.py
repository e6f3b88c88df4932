"""Attention a text's tokens receive from a query window (a question, or the text's tail) in a causal LM.

The decoder layers are run by hand, only up to the deepest layer whose heads are read (early exit), with SDPA for
the forward pass; the window's attention rows are recomputed from the captured hidden states, so no quadratic
attention matrix is materialised and the shared model is never modified (safe across threads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..model_loading import load_causal_lm
from .lm import TokenScores, lm_window, start_ids, tokenize_with_offsets

LayerHeads = Mapping[int, Sequence[int]]


def all_heads(model: object) -> dict[int, list[int]]:
    """Every head of every layer."""
    config = model.config  # type: ignore[attr-defined]
    return {layer: list(range(config.num_attention_heads)) for layer in range(config.num_hidden_layers)}


def _keys(module: object, normed: object, position_embeddings: tuple[object, object]) -> object:
    """Post-RoPE keys of every position, [batch, kv_heads, seq, head_dim]."""
    import torch

    k = module.k_proj(normed).view(*normed.shape[:2], -1, module.head_dim)  # type: ignore[attr-defined]
    if getattr(module, "k_norm", None) is not None:
        k = module.k_norm(k)  # type: ignore[attr-defined]
    k = k.transpose(1, 2)
    cos, sin = (t.unsqueeze(1) for t in position_embeddings)  # type: ignore[attr-defined]
    k1, k2 = k.chunk(2, dim=-1)
    return k * cos + torch.cat((-k2, k1), dim=-1) * sin


def query_attention(model: object, ids: Sequence[int], n_query: int, heads: LayerHeads) -> np.ndarray:
    """Attention from the last ``n_query`` positions to every position, summed over those queries.

    Returns one row per (layer, head) pair of ``heads`` (layers ascending, heads in the given order), shape
    [pairs, len(ids)]. Only layers up to the deepest one in ``heads`` are run.
    """
    import torch

    from ..kv.observation import window_attention, window_queries

    base = model.model  # type: ignore[attr-defined]
    deepest = max(heads)
    rows = []
    with torch.inference_mode():
        hidden = base.embed_tokens(torch.tensor([list(ids)]))
        positions = torch.arange(hidden.shape[1]).unsqueeze(0)
        pe = base.rotary_emb(hidden, position_ids=positions)
        for index, layer in enumerate(base.layers[: deepest + 1]):
            if index in heads:
                attn = layer.self_attn
                normed = layer.input_layernorm(hidden)
                probs = window_attention(
                    window_queries(attn, normed, pe, n_query), _keys(attn, normed, pe), attn.scaling
                )
                per_head = probs.sum(dim=3).flatten(1, 2)[0]  # [heads, seq]; head h reads kv head h // group
                rows.append(per_head[list(heads[index])].float().numpy())
            if index < deepest:
                hidden = layer(hidden, position_embeddings=pe, position_ids=positions)
    return np.concatenate(rows)


def text_attention(
    text: str,
    model_name: str,
    heads: LayerHeads | Callable[[object], LayerHeads],
    query: str | None = None,
    tail_tokens: int = 32,
    max_window: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[TokenScores, np.ndarray]:
    """Attention each LM token of ``text`` receives from ``query`` (appended after it), per selected head.

    Without a query, the last ``tail_tokens`` tokens of the text are the query. Text longer than the LM window
    is read in windows, each followed by the query. Returns the tokens (values: mean over heads) and the
    per-head matrix [pairs, tokens].
    """
    model, tokenizer = load_causal_lm(model_name)
    chosen = heads(model) if callable(heads) else heads
    ids, offsets = tokenize_with_offsets(tokenizer, text)
    if query:
        q_ids = tokenizer(f"\n\nQuestion: {query}\nAnswer:", add_special_tokens=False)["input_ids"]
    else:
        q_ids = ids[-tail_tokens:]
    head = start_ids(tokenizer)
    window = lm_window(model, max_window)
    q_ids = q_ids[-(window // 4) :]
    room = max(1, window - len(head) - len(q_ids))
    matrix = np.zeros((sum(len(h) for h in chosen.values()), len(ids)), dtype=np.float64)
    starts = list(range(0, len(ids), room)) or [0]
    for n, s in enumerate(starts):
        chunk = ids[s : s + room]
        got = query_attention(model, head + chunk + q_ids, len(q_ids), chosen)
        matrix[:, s : s + len(chunk)] = got[:, len(head) : len(head) + len(chunk)]
        if progress:
            progress(n + 1, len(starts))
    if not query and len(ids):  # the tail is the query itself: rank it first (kept window)
        matrix[:, -len(q_ids) :] = matrix.max()
    return TokenScores(offsets, matrix.mean(axis=0) if len(matrix) else np.zeros(len(ids))), matrix


def pool(values: np.ndarray, kernel: int, mode: str = "max") -> np.ndarray:
    """1-D max or average pooling with a centred odd window, same length out."""
    if kernel <= 1 or len(values) == 0:
        return values
    half = kernel // 2
    padded = np.pad(values, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return windows.max(axis=1) if mode == "max" else windows.mean(axis=1)
