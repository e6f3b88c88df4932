"""TF-IDF relevance of units to a query (the question, or the whole document when there is none)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def tfidf_relevance(texts: Sequence[str], query: str | None = None) -> np.ndarray:
    """Cosine similarity of each text's TF-IDF vector to the query's (or to the document centroid)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [t.strip() for t in texts]
    if not any(texts):
        return np.zeros(len(texts))
    vectorizer = TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b\w+\b", stop_words="english")
    try:
        matrix = vectorizer.fit_transform(list(texts) + ([query] if query else []))
    except ValueError:  # only stop words or no word characters at all
        return np.zeros(len(texts))
    doc = matrix[: len(texts)]
    target = matrix[len(texts) :] if query else np.asarray(doc.mean(axis=0))
    target = np.asarray(target.todense() if hasattr(target, "todense") else target).ravel()
    norm = np.linalg.norm(target)
    if norm == 0:
        return np.zeros(len(texts))
    sims = np.asarray(doc @ target).ravel() / norm
    return sims
