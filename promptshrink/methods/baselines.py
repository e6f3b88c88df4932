"""Baselines users compare against: keep the first/last tokens, a seeded random pick, a TF-IDF filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..registry import register
from ..scoring.tfidf import tfidf_relevance
from ..segmentation import Unit
from .base import CompressionRequest, ExtractiveCompressor


@register
@dataclass
class KeepFirstCompressor(ExtractiveCompressor):
    """Score = minus the position: the budget keeps a prefix of the text (units default to words)."""

    name = "keep_first"
    requires_lm = False
    linear_time = True
    summary = "Truncation baseline: keep the beginning of the text up to the budget."
    default_unit = "word"

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return -np.arange(len(units), dtype=float)


@register
@dataclass
class KeepLastCompressor(ExtractiveCompressor):
    """Score = the position: the budget keeps a suffix of the text (units default to words)."""

    name = "keep_last"
    requires_lm = False
    linear_time = True
    summary = "Truncation baseline: keep the end of the text up to the budget."
    default_unit = "word"

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return np.arange(len(units), dtype=float)


@register
@dataclass
class RandomCompressor(ExtractiveCompressor):
    """Score = a uniform draw seeded by the request's ``seed``: the same seed keeps the same units."""

    name = "random"
    requires_lm = False
    linear_time = True
    summary = "Seeded random baseline: keep a random subset of units (in order) up to the budget."
    default_unit = "word"

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return np.random.default_rng(request.seed).random(len(units))


@register
@dataclass
class TfidfCompressor(ExtractiveCompressor):
    """Score = TF-IDF cosine similarity of each sentence to the question, or to the whole document without one."""

    name = "tfidf"
    requires_lm = False
    linear_time = True
    summary = "Sentence filter by TF-IDF similarity to the question (or to the whole document)."
    uses_question = True

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return tfidf_relevance([u.text for u in units], request.question)
