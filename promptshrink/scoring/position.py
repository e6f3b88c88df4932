"""Positional importance: the start and end of a prompt, and the text near the question, matter more."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..segmentation import Unit


def positional_importance(
    units: Sequence[Unit], text: str, question: str | None = None, edge: float = 0.1
) -> np.ndarray:
    """A U-shaped prior in [0, 1] over unit positions, raised near any occurrence of the question in the text.

    ``edge`` is the decay length as a fraction of the text: a unit at relative position x gets
    max(exp(-x / edge), exp(-(1 - x) / edge)); the question is read after the text, so its end is near it too.
    """
    if not units:
        return np.zeros(0)
    if edge <= 0:
        raise ValueError(f"edge must be > 0, got {edge}")
    size = max(1, len(text))
    mid = np.asarray([(u.start + u.end) / 2 for u in units], dtype=float) / size
    score = np.maximum(np.exp(-mid / edge), np.exp(-(1.0 - mid) / edge))
    if question and question.strip():
        found = [i / size for i in _occurrences(text, question.strip())]
        for at in found:
            score = np.maximum(score, np.exp(-np.abs(mid - at) / edge))
    return score


def _occurrences(text: str, needle: str) -> list[int]:
    out, at = [], text.find(needle)
    while at >= 0:
        out.append(at)
        at = text.find(needle, at + 1)
    return out
