"""TF-IDF relevance of units to a query (the question, or the whole document when there is none)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_TERM_RE = re.compile(r"(?u)\b\w+\b")
# Han, kana, Hangul, Thai, Lao, Khmer, Myanmar: words are not space-separated (or, in Korean, carry particles),
# so their terms are overlapping character bigrams, the usual unit for CJK retrieval.
_NGRAM_SCRIPT_RE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003ffff]+"
)


def terms(text: str) -> list[str]:
    """Lower-cased word terms; runs of the scripts in `_NGRAM_SCRIPT_RE` give their character bigrams instead
    (a run of one character gives that character)."""
    out: list[str] = []
    for word in _TERM_RE.findall(text.lower()):
        cursor = 0
        for m in _NGRAM_SCRIPT_RE.finditer(word):
            if m.start() > cursor:
                out.append(word[cursor : m.start()])
            run = m.group()
            out.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
            cursor = m.end()
        if cursor < len(word):
            out.append(word[cursor:] if cursor else word)
    return out


def tfidf_relevance(texts: Sequence[str], query: str | None = None) -> np.ndarray:
    """Cosine similarity of each text's TF-IDF vector to the query's (or to the document centroid).

    The weighting is scikit-learn's ``TfidfVectorizer(sublinear_tf=True, tokenizer=terms, stop_words="english")`` on
    the texts and the query (1 + ln tf, smooth idf, rows l2-normalised), computed directly: the vectorizer's
    parameter validation and stop-word check cost more than the arithmetic on a 2K-token input. Terms are words,
    and character bigrams in scripts without spaces (see `terms`), so Chinese, Japanese, Korean and Thai work.
    """
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    docs = [t.strip() for t in texts]
    if not any(docs):
        return np.zeros(len(docs))
    vocab: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for r, doc in enumerate(docs + ([query] if query else [])):
        for term in terms(doc):
            if term not in ENGLISH_STOP_WORDS:
                cols.append(vocab.setdefault(term, len(vocab)))
                rows.append(r)
    if not vocab:  # only stop words or no word characters at all
        return np.zeros(len(docs))
    n_rows = len(docs) + (1 if query else 0)
    matrix = csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(n_rows, len(vocab)))
    matrix.sum_duplicates()
    df = np.bincount(matrix.indices, minlength=len(vocab))
    matrix.data = (1.0 + np.log(matrix.data)) * (np.log((1 + n_rows) / (1 + df)) + 1.0)[matrix.indices]
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    matrix = csr_matrix(matrix.multiply(1.0 / np.where(norms > 0, norms, 1.0)[:, None]))
    doc = matrix[: len(docs)]
    target = matrix[len(docs)].toarray().ravel() if query else np.asarray(doc.mean(axis=0)).ravel()
    norm = np.linalg.norm(target)
    if norm == 0:
        return np.zeros(len(docs))
    return np.asarray(doc @ target).ravel() / norm
