"""Bring a whole-unit selection up to its budget: the best unit left out, cut at a word boundary, fills the gap."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .segmentation import Unit
from .selection import render
from .target_tokenizer import TargetTokenizer

FILL_SHARE = 0.9  # below this share of the budget, a cut unit is added
_WORD = re.compile(r"\S+\s*")


def top_up(
    units: Sequence[Unit],
    scores: np.ndarray,
    keep: Sequence[bool],
    limit: int,
    tokenizer: TargetTokenizer,
    kept_tokens: int | None = None,
) -> tuple[list[Unit], np.ndarray, list[bool], int]:
    """(units, scores, keep, kept tokens) where, if whole units keep less than `FILL_SHARE` of ``limit``, the
    best-scoring unit left out is split at the longest word prefix that still fits, and that prefix is kept.

    Never exceeds ``limit``. Units scored -inf (a scorer's explicit drop) are never used. When the best unit's first
    word does not fit, the next one is tried, so a gap is filled whenever any word of a dropped unit fits."""
    units, keep = list(units), list(keep)
    kept = tokenizer.count(render(units, keep)) if kept_tokens is None else kept_tokens
    ranked = np.lexsort((np.arange(len(units)), -scores)).tolist()
    left_out = [units[i] for i in ranked if not keep[i] and not units[i].forced and np.isfinite(scores[i])]
    for unit in left_out:
        if kept >= FILL_SHARE * limit:
            break
        at = units.index(unit)  # earlier splits shift the positions
        ends = [m.end() for m in _WORD.finditer(unit.text)]

        def fits(n: int, at: int = at, unit: Unit = unit, ends: list[int] = ends) -> int | None:
            head = Unit(unit.text[: ends[n - 1]], unit.start, unit.start + ends[n - 1])
            count = tokenizer.count(render([*units[:at], head, *units[at + 1 :]], [*keep[:at], True, *keep[at + 1 :]]))
            return count if count <= limit else None

        lo, hi, best, best_count = 1, len(ends) - 1, 0, kept  # the whole unit did not fit the greedy fill
        while lo <= hi:
            mid = (lo + hi) // 2
            count = fits(mid)
            if count is None:
                hi = mid - 1
            else:
                lo, best, best_count = mid + 1, mid, count
        if best:
            cut = unit.start + ends[best - 1]
            units[at : at + 1] = [
                Unit(unit.text[: ends[best - 1]], unit.start, cut),
                Unit(unit.text[ends[best - 1] :], cut, unit.end),
            ]
            keep[at : at + 1] = [True, False]
            scores = np.insert(scores, at + 1, scores[at])
            kept = best_count
    return units, scores, keep, kept
