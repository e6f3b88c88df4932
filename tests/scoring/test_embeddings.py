"""Sentence embeddings: batched in length order, returned in input order, equal to one-by-one encoding."""

from __future__ import annotations

import numpy as np
import pytest

from promptshrink.model_loading import DEFAULT_EMBEDDER
from promptshrink.scoring.embeddings import embed
from tests.support.models import model_installed

pytestmark = pytest.mark.skipif(not model_installed(DEFAULT_EMBEDDER), reason="embedder package not installed")


def test_rows_follow_the_input_order_whatever_the_batching():
    texts = [
        "A much longer sentence about the harbour, the lighthouse keeper and the storm that came in the night.",
        "Cats sleep.",
        "",
        "The lighthouse keeper watched the storm.",
        "Stock prices fell sharply on Monday after the announcement.",
    ]
    together = embed(texts, batch_size=2)
    alone = np.concatenate([embed([t]) for t in texts])
    assert together.shape == (5, alone.shape[1])
    assert np.allclose(together, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert together[3] @ together[0] > together[4] @ together[0]  # meaning, not position, decides closeness


def test_empty_input_gives_an_empty_matrix():
    assert embed([]).shape == (0, 384)
