"""Pick the highest-scoring units that fit the budget, measured on the rendered text in the target tokenizer."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from .errors import BudgetError
from .segmentation import Unit, segment
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


def select_or_cut(
    units: Sequence[Unit],
    scores: Sequence[float],
    limit: int,
    tokenizer: TargetTokenizer,
    costs: Sequence[int] | None = None,
) -> tuple[list[Unit], np.ndarray, list[bool], int]:
    """`select_units`, and `cut_best_unit` when the budget holds no whole unit: never an empty output.

    Returns the units (the cut one split in two), their scores, the keep mask and the output's token count.
    """
    keep, count = select_units(units, scores, limit, tokenizer, costs)
    if any(keep):
        return list(units), np.asarray(scores, dtype=float), keep, count
    return cut_best_unit(units, scores, limit, tokenizer)


def cut_best_unit(
    units: Sequence[Unit], scores: Sequence[float], limit: int, tokenizer: TargetTokenizer
) -> tuple[list[Unit], np.ndarray, list[bool], int]:
    """Keep the longest prefix of the best-scoring unit that fits ``limit`` tokens, cut at a word boundary.

    For a budget smaller than every unit (a 5-token budget for a 19-token sentence): the output is the most
    relevant unit's first words, still an ordered subsequence of the input. Words are `segment`'s word units
    (per character in scripts without spaces, 16-character slices of long runs such as base64), so the output
    stays an ordered subsequence of the input's words. Raises `BudgetError` when not even the first word fits
    (a 1-token budget for a text whose words cost 2 tokens each). Units scored -inf are a last resort.
    """
    values = np.asarray(scores, dtype=float)
    values = np.where(np.isfinite(values), values, -np.inf)
    candidates = [i for i, u in enumerate(units) if u.content] or list(range(len(units)))
    best = max(candidates, key=lambda i: (values[i], -i))
    unit = units[best]
    words = [w.text for w in segment(unit.text, "word")]
    ends = np.cumsum([len(w) for w in words]).tolist()

    def fits(n: int) -> bool:
        return tokenizer.count(unit.text[:n].strip()) <= limit

    cut = _last_true([0, *ends], fits)
    if cut == 0:
        raise BudgetError(
            f"the budget of {limit} tokens holds not even the first word of the text's most relevant part "
            f"({tokenizer.count(words[0].strip())} tokens); raise the budget"
        )
    cut = len(unit.text[:cut].rstrip())  # trailing whitespace goes with the dropped rest
    head = Unit(unit.text[:cut], unit.start, unit.start + cut)
    parts = [head] if cut == len(unit.text) else [head, Unit(unit.text[cut:], unit.start + cut, unit.end)]
    out = [*units[:best], *parts, *units[best + 1 :]]
    given = np.asarray(scores, dtype=float)
    out_scores = np.concatenate([given[:best], np.repeat(given[best], len(parts)), given[best + 1 :]])
    keep = [i == best for i in range(len(out))]
    return out, out_scores, keep, tokenizer.count(render(out, keep))


def _last_true(points: Sequence[int], ok: Callable[[int], bool]) -> int:
    """The largest of the ascending ``points`` where ``ok`` holds, by bisection; ``ok(points[0])`` must hold."""
    lo, hi = 0, len(points) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(points[mid]):
            lo = mid
        else:
            hi = mid - 1
    return points[lo]
