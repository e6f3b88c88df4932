"""Evaluator heads (EHPC): find, once per causal LM, the heads whose question-to-context attention lands on the
answer, by probing with needle-in-a-haystack prompts; store them under models/<model_key>/evaluator_heads.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, ModelUnavailableError
from ..model_loading import DEFAULT_LM, load_causal_lm, manifest, model_key
from ..paths import models_dir
from ..segmentation import segment
from .attention import all_heads, text_attention

FILENAME = "evaluator_heads.json"
_KEYS = ["amber", "cobalt", "crimson", "harbor", "orchard", "granite", "willow", "falcon", "meadow", "lantern"]
_FILLER = (
    "The weather was mild for most of the week. Several people walked along the river in the afternoon. "
    "A small market opened near the station and sold bread, fruit and flowers. The library extended its hours. "
    "Children played in the park while their parents talked about the new school year. Traffic was light."
)


def heads_path(model: str = DEFAULT_LM) -> Path:
    return models_dir() / model_key(model) / FILENAME


def default_corpus() -> str:
    """The repository's real test article when present (a checkout), else a short built-in filler text."""
    article = Path(__file__).resolve().parents[2] / "tests" / "data" / "article.txt"
    return article.read_text() if article.is_file() else _FILLER


def probe(
    sentences: list[str], rng: np.random.Generator, depth: float, context_chars: int
) -> tuple[str, str, tuple[int, int]]:
    """Consecutive real sentences with a synthetic needle at ``depth``: (text, question, needle span)."""
    start = int(rng.integers(0, len(sentences)))
    hay: list[str] = []
    while sum(len(s) for s in hay) < context_chars:
        hay.append(sentences[(start + len(hay)) % len(sentences)])
    key, value = _KEYS[int(rng.integers(0, len(_KEYS)))], int(rng.integers(100000, 999999))
    needle = f" The secret {key} code is {value}."
    cut = int(round(depth * len(hay)))
    before = "".join(hay[:cut])
    span = (len(before), len(before) + len(needle))
    return before + needle + "".join(hay[cut:]), f"What is the secret {key} code?", span


def calibrate(
    model: str = DEFAULT_LM,
    corpus: str | None = None,
    probes: int = 12,
    context_chars: int = 2000,
    top_k: int = 8,
    quality: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Score every head by the share of the question's attention to the context that lands on the needle.

    The selected heads are the ``top_k`` best among layers up to the shallowest layer whose own top-k mean
    reaches ``quality`` x the best layer's (early/middle layers: compression then runs only that deep).
    """
    if probes < 1 or top_k < 1 or context_chars < 100 or not 0 < quality <= 1:
        raise InvalidInputError("need probes >= 1, top_k >= 1, context_chars >= 100 and 0 < quality <= 1")
    sentences = [u.text for u in segment(corpus or default_corpus(), "sentence") if len(u.text.strip()) > 20]
    if len(sentences) < 3:
        raise InvalidInputError("the calibration corpus needs at least three sentences")
    lm, _ = load_causal_lm(model)
    layers, heads = lm.config.num_hidden_layers, lm.config.num_attention_heads
    rng = np.random.default_rng(seed)
    total = np.zeros((layers, heads))
    for i in range(probes):
        text, question, (start, end) = probe(sentences, rng, (i + 0.5) / probes, context_chars)
        tokens, matrix = text_attention(text, model, all_heads, question)
        on_needle = (tokens.offsets[:, 1] > start) & (tokens.offsets[:, 0] < end)
        share = matrix[:, on_needle].sum(axis=1) / np.maximum(matrix.sum(axis=1), 1e-12)
        total += share.reshape(layers, heads)
    scores = total / probes
    k = min(top_k, heads * layers)
    per_layer = np.sort(scores, axis=1)[:, ::-1][:, : min(k, heads)].mean(axis=1)
    depth = int(np.argmax(per_layer >= quality * per_layer.max()))
    pairs = sorted(((float(scores[ly, h]), ly, h) for ly in range(depth + 1) for h in range(heads)), reverse=True)[:k]
    spec = manifest().get(model)
    return {
        "model": model,
        "model_id": spec.hf_id if spec else model,
        "layers": layers,
        "heads_per_layer": heads,
        "heads": [[ly, h] for _, ly, h in sorted(pairs, key=lambda p: (p[1], p[2]))],
        "deepest_layer": max(ly for _, ly, _ in pairs),
        "probe": {
            "probes": probes,
            "context_chars": context_chars,
            "top_k": top_k,
            "quality": quality,
            "seed": seed,
            "corpus": "tests/data/article.txt" if corpus is None and default_corpus() != _FILLER else "custom",
            "score": "share of question->context attention on the needle tokens, mean over probes",
        },
        "layer_scores": [round(float(v), 5) for v in per_layer],
        "scores": [[round(float(v), 5) for v in row] for row in scores],
    }


def save(result: dict[str, Any], path: Path | None = None) -> Path:
    path = path or heads_path(result["model"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def load(model: str = DEFAULT_LM, max_layer: int | None = None) -> dict[int, list[int]]:
    """{layer: [heads]} from the stored calibration of ``model``; a clear error when it was never run.

    With ``max_layer``, the calibration's ``top_k`` best-scoring heads among layers ``<= max_layer`` instead of the
    stored selection: a shallower early exit (see ``benchmarks.ehpc_depth`` for the depth/quality trade-off).
    """
    path = heads_path(model)
    if not path.is_file():
        raise ModelUnavailableError(
            f"no evaluator heads for model {model!r} at {path}; run: promptshrink calibrate-ehpc --model {model}"
        )
    data = json.loads(path.read_text())
    pairs = [(int(layer), int(head)) for layer, head in data["heads"]]
    if max_layer is not None:
        if not 0 <= max_layer < data["layers"]:
            raise InvalidInputError(f"max_layer must be in [0, {data['layers'] - 1}] for {model!r}, got {max_layer}")
        scores = np.asarray(data["scores"])[: max_layer + 1]
        best = np.argsort(-scores, axis=None, kind="stable")[: data["probe"]["top_k"]]
        pairs = sorted((int(i), int(h)) for i, h in zip(*np.unravel_index(best, scores.shape)))
    out: dict[int, list[int]] = {}
    for layer, head in pairs:
        out.setdefault(layer, []).append(head)
    return out
