"""Pick the highest-scoring units that fit the budget, measured on the rendered text in the target tokenizer."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from .errors import BudgetError
from .segmentation import Unit
from .target_tokenizer import TargetTokenizer


def render(units: Sequence[Unit], keep: Sequence[bool]) -> str:
    """Concatenate the kept units in their original order; leading whitespace of the result is dropped."""
    return "".join(u.text for u, k in zip(units, keep) if k).lstrip()


def select_to_budget(
    units: Sequence[Unit],
    scores: Sequence[float],
    limit: int,
    tokenizer: TargetTokenizer,
) -> list[bool]:
    """Greedy top-score selection under ``limit`` tokens; forced units are always kept (see `select_units`)."""
    return select_units(units, scores, limit, tokenizer)[0]


def select_units(
    units: Sequence[Unit],
    scores: Sequence[float],
    limit: int,
    tokenizer: TargetTokenizer,
    costs: Sequence[int] | None = None,
) -> tuple[list[bool], int]:
    """Greedy top-score selection under ``limit`` tokens; forced units are always kept, units scored -inf never.

    Unit ``costs`` (counted one by one when not given) guide the greedy fill; then the rendered output is
    counted (BPE merges across unit boundaries can change the total) and the lowest-scoring kept units are
    dropped until it fits. Returns the keep mask and the token count of the rendered output.
    """
    if len(scores) != len(units):
        raise ValueError(f"{len(scores)} scores for {len(units)} units")
    if costs is None:
        costs = tokenizer.count_many([u.text for u in units])
    keep = [u.forced for u in units]
    used = sum(c for c, k in zip(costs, keep) if k)
    forced_tokens = tokenizer.count(render(units, keep)) if any(keep) else 0
    if forced_tokens > limit:
        raise BudgetError(
            f"the protected content alone needs {forced_tokens} tokens but the budget is {limit}; "
            "raise the budget or protect less (keep=..., code blocks, URLs, numbers)"
        )
    values = np.asarray(scores, dtype=float)
    values = np.where(np.isfinite(values), values, -np.inf)
    for i in np.lexsort((np.arange(len(units)), -values)).tolist():  # best first, ties in text order
        if values[i] == -np.inf:  # a scorer's explicit drop (e.g. a coarse stage): never filled back in
            break
        if not keep[i] and used + costs[i] <= limit:
            keep[i] = True
            used += costs[i]
    return keep, _trim_to_limit(units, keep, values, costs, limit, tokenizer)


def _trim_to_limit(
    units: Sequence[Unit],
    keep: list[bool],
    values: np.ndarray,
    costs: Sequence[int],
    limit: int,
    tokenizer: TargetTokenizer,
) -> int:
    """Drop the lowest-scoring kept units, in batches sized by the measured excess, until the output fits.

    Returns the token count of the rendered output."""
    kept = np.flatnonzero([k and not u.forced for u, k in zip(units, keep)])
    droppable = deque(kept[np.lexsort((-kept, values[kept]))].tolist())  # weakest first, later first on ties
    count = tokenizer.count(render(units, keep))
    while count > limit:
        if not droppable:  # cannot happen: forced content was checked against the limit
            raise BudgetError("cannot meet the budget without dropping protected content")
        freed = 0
        while droppable and freed < count - limit:
            i = droppable.popleft()
            keep[i] = False
            freed += max(1, costs[i])
        count = tokenizer.count(render(units, keep))
    return count
