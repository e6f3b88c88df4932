"""Semantic chunking: group adjacent sentences by embedding similarity, then fix outlier chunk sizes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def adjacent_similarity(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of each unit-norm row with the next one (length n - 1)."""
    if len(vectors) < 2:
        return np.zeros(0)
    return np.einsum("ij,ij->i", vectors[:-1], vectors[1:])


def semantic_chunks(
    similarity: np.ndarray,
    costs: Sequence[int],
    *,
    hard_breaks: Sequence[int] = (),
    quantile: float = 0.35,
    max_tokens: int = 160,
    min_tokens: int = 24,
) -> list[tuple[int, int]]:
    """Half-open sentence ranges [i, j) forming chunks.

    A boundary falls after sentence i when ``similarity[i]`` is below the ``quantile`` of all adjacent
    similarities, and always at ``hard_breaks`` (boundaries after sentence i, e.g. around protected sentences).
    Outliers are then fixed: a chunk over ``max_tokens`` is split at its weakest inner link (recursively),
    and a chunk under ``min_tokens`` is merged into the neighbour it is more similar to (never across a hard break).
    """
    n = len(costs)
    if n == 0:
        return []
    hard = {b for b in hard_breaks if 0 <= b < n - 1}
    cut = float(np.quantile(similarity, quantile)) if len(similarity) else 0.0
    bounds = sorted({i for i, s in enumerate(similarity) if s < cut} | hard)
    chunks, start = [], 0
    for b in bounds:
        chunks.append((start, b + 1))
        start = b + 1
    chunks.append((start, n))
    chunks = [piece for c in chunks for piece in _split_long(c, similarity, costs, max_tokens)]
    return _merge_short(chunks, similarity, costs, hard, min_tokens, max_tokens)


def _split_long(
    chunk: tuple[int, int], similarity: np.ndarray, costs: Sequence[int], max_tokens: int
) -> list[tuple[int, int]]:
    i, j = chunk
    if j - i < 2 or sum(costs[i:j]) <= max_tokens:
        return [chunk]
    k = i + int(np.argmin(similarity[i : j - 1]))  # boundary after sentence k
    return _split_long((i, k + 1), similarity, costs, max_tokens) + _split_long(
        (k + 1, j), similarity, costs, max_tokens
    )


def _merge_short(
    chunks: list[tuple[int, int]],
    similarity: np.ndarray,
    costs: Sequence[int],
    hard: set[int],
    min_tokens: int,
    max_tokens: int,
) -> list[tuple[int, int]]:
    out = list(chunks)
    changed = True
    while changed:
        changed = False
        for idx, (i, j) in enumerate(out):
            if sum(costs[i:j]) >= min_tokens:
                continue
            options = []
            if idx > 0 and (i - 1) not in hard:
                options.append((similarity[i - 1], idx - 1))
            if idx + 1 < len(out) and (j - 1) not in hard:
                options.append((similarity[j - 1], idx + 1))
            options = [(s, o) for s, o in options if sum(costs[min(i, out[o][0]) : max(j, out[o][1])]) <= max_tokens]
            if not options:
                continue
            _, other = max(options)
            a, b = sorted((idx, other))
            out[a : b + 1] = [(out[a][0], out[b][1])]
            changed = True
            break
    return out
