"""Baselines users compare against: keep the first/last tokens, a seeded random pick, a TF-IDF filter."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..registry import register
from ..scoring.tfidf import tfidf_relevance
from ..segmentation import Unit
from .base import CompressionRequest, Compressor


@register
class KeepFirst(Compressor):
    name = "keep_first"
    requires_lm = False
    summary = "Truncation baseline: keep the beginning of the text up to the budget."
    default_unit = "word"

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return -np.arange(len(units), dtype=float)


@register
class KeepLast(Compressor):
    name = "keep_last"
    requires_lm = False
    summary = "Truncation baseline: keep the end of the text up to the budget."
    default_unit = "word"

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return np.arange(len(units), dtype=float)


@register
class RandomUnits(Compressor):
    name = "random"
    requires_lm = False
    summary = "Seeded random baseline: keep a random subset of units (in order) up to the budget."
    default_unit = "word"

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return np.random.default_rng(request.seed).random(len(units))


@register
class TfidfFilter(Compressor):
    name = "tfidf"
    requires_lm = False
    summary = "Sentence filter by TF-IDF similarity to the question (or to the whole document)."
    uses_question = True

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return tfidf_relevance([u.text for u in units], request.question)
