"""Quality metrics that need no paid API: answer retention, SQuAD exact match / F1, log-likelihood retention."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def answer_retained(compressed: str, answers: Sequence[str]) -> bool:
    """True when some gold answer still occurs (after normalisation) in the compressed text.

    An answer that SQuAD normalisation empties (e.g. "A", "the") is matched without removing articles.
    """
    haystack = f" {normalize(compressed)} "
    plain = f" {_plain(compressed)} "
    return any(
        f" {normalize(a)} " in haystack if normalize(a) else bool(_plain(a)) and f" {_plain(a)} " in plain
        for a in answers
    )


def _plain(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return float(any(normalize(prediction) == normalize(a) for a in answers))


def f1(prediction: str, answers: Sequence[str]) -> float:
    """Best token-overlap F1 of the prediction against any gold answer."""
    pred = normalize(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize(answer).split()
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            precision, recall = common / len(pred), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
        elif not pred and not gold:
            best = 1.0
    return best


def ll_retained(full_nll: Sequence[float], compressed_nll: Sequence[float]) -> float | None:
    """Share of the reader's confidence kept: mean per-token NLL with the full context / with the compressed one.

    1.0 means the gold answer is as likely as with the full context; 0.5 means its NLL doubled.
    """
    if not full_nll or sum(compressed_nll) <= 0:
        return None
    return sum(full_nll) / sum(compressed_nll)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The final answer of a GSM8K-style solution: the number after the last ``####``, else the last number."""
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    numbers = _NUMBER.findall(tail if "####" in text else text)
    if not numbers:
        return None
    value = (numbers[0] if "####" in text else numbers[-1]).replace(",", "")
    return value[:-2] if value.endswith(".0") else value


def interpolate(points: Sequence[tuple[float, float]], at: float) -> float | None:
    """Linear interpolation of score at achieved ratio ``at`` from (ratio, score) points; None outside them."""
    pts = sorted(points)
    if not pts or at < pts[0][0] - 1e-9 or at > pts[-1][0] + 1e-9:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= at <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (at - x0) / (x1 - x0)
    return pts[0][1]


def bootstrap_ci(
    stat: Callable[[Sequence[int]], float | None], n: int, resamples: int = 1000, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of ``stat`` over resampled item indices (None when undefined)."""
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        v = stat([rng.randrange(n) for _ in range(n)])
        if v is not None:
            values.append(v)
    if len(values) < resamples // 2:
        return None
    return percentile(values, 2.5), percentile(values, 97.5)  # type: ignore[return-value]
