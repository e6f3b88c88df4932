"""Coarse stage helpers: group units into sentences/documents and keep the best groups up to a token share."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..segmentation import Unit
from ..target_tokenizer import TargetTokenizer


def owners(units: Sequence[Unit], groups: Sequence[Unit]) -> np.ndarray:
    """Index of the group that holds each unit's first character (groups tile the same text)."""
    starts = np.asarray([g.start for g in groups])
    at = np.asarray([u.start for u in units])
    return np.clip(np.searchsorted(starts, at, side="right") - 1, 0, max(0, len(groups) - 1))


def documents(sentences: Sequence[Unit], fallback_sentences: int = 4) -> list[Unit]:
    """Paragraphs (sentences between blank lines); chunks of ``fallback_sentences`` when there is one paragraph."""
    docs: list[list[Unit]] = []
    for s in sentences:
        lead = s.text[: len(s.text) - len(s.text.lstrip())]
        if not docs or lead.count("\n") >= 2:
            docs.append([s])
        else:
            docs[-1].append(s)
    if len(docs) < 2:
        docs = [list(sentences[i : i + fallback_sentences]) for i in range(0, len(sentences), fallback_sentences)]
    return [Unit("".join(u.text for u in d), d[0].start, d[-1].end, any(u.forced for u in d)) for d in docs if d]


def keep_top_groups(
    groups: Sequence[Unit], scores: Sequence[float], share: int, tokenizer: TargetTokenizer
) -> np.ndarray:
    """Keep forced groups, then the highest-scoring ones until ``share`` tokens are reached (the last may cross)."""
    costs = tokenizer.count_many([g.text for g in groups])
    keep = np.asarray([g.forced for g in groups], dtype=bool)
    used = sum(c for c, k in zip(costs, keep) if k)
    for i in sorted(range(len(groups)), key=lambda i: (-scores[i], i)):
        if used >= share:
            break
        if not keep[i]:
            keep[i] = True
            used += costs[i]
    return keep


def keep_by_cost(scores: np.ndarray, costs: np.ndarray, share: float) -> np.ndarray:
    """The highest-scoring items whose summed cost stays within ``share`` of the total cost (at least one)."""
    keep = np.zeros(len(scores), dtype=bool)
    if not len(scores):
        return keep
    allowed, used = share * costs.sum(), 0.0
    for i in np.argsort(-scores, kind="stable"):
        if used + costs[i] > allowed and keep.any():
            continue
        keep[i] = True
        used += costs[i]
    return keep
