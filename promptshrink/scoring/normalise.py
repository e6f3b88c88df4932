"""Put signals on one scale before weighting: ranks in [0, 1] or z-scores."""

from __future__ import annotations

import numpy as np


def normalise(values: np.ndarray, how: str = "rank") -> np.ndarray:
    """``rank``: average rank scaled to [0, 1] (ties share a rank); ``zscore``: (x - mean) / std."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.zeros(len(values))
    if how == "zscore":
        std = values.std()
        return (values - values.mean()) / std if std > 0 else np.zeros(len(values))
    if how != "rank":
        raise ValueError(f"normalisation must be 'rank' or 'zscore', got {how!r}")
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ranks = np.bincount(inverse, weights=ranks) / counts  # average rank within ties
    return ranks[inverse] / (len(values) - 1)
