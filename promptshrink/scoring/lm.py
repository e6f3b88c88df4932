"""Per-token signals from a causal LM over long text: surprisal (self-information) in windows with overlap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..model_loading import DEFAULT_LM, load_causal_lm
from ..segmentation import Unit

LN2 = float(np.log(2.0))


@dataclass
class TokenScores:
    """Scores of the LM tokens of a text; ``offsets[i]`` is the character span of token i."""

    offsets: np.ndarray
    values: np.ndarray


def lm_window(model: object, cap: int = 1024) -> int:
    config = model.config  # type: ignore[attr-defined]
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return min(value, cap)
    return cap


def tokenize_with_offsets(tokenizer: object, text: str) -> tuple[list[int], np.ndarray]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
    return list(enc["input_ids"]), np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)


def start_ids(tokenizer: object) -> list[int]:
    """A start-of-text token so the first real token is predicted too."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return [int(value)]
    return tokenizer("\n", add_special_tokens=False)["input_ids"][:1]  # type: ignore[operator]


def surprisal(
    text: str,
    model_name: str = DEFAULT_LM,
    prefix: str | None = None,
    overlap: int = 128,
    max_window: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> TokenScores:
    """Self-information -log2 P(x_t | x_<t) of every LM token of ``text``, optionally conditioned on ``prefix``.

    Text longer than the LM window is scored in windows; each window re-reads ``overlap`` tokens of left
    context so tokens near a window start still see context.
    """
    import torch

    model, tokenizer = load_causal_lm(model_name)
    ids, offsets = tokenize_with_offsets(tokenizer, text)
    head = start_ids(tokenizer)
    if prefix:
        head = head + tokenizer(prefix, add_special_tokens=False)["input_ids"]
    window = lm_window(model, max_window)
    head = head[: window // 4]  # a long question must not crowd out the text
    room = window - len(head)
    overlap = min(overlap, room // 2)
    stride = room - overlap
    values = np.zeros(len(ids), dtype=np.float64)
    starts = list(range(0, len(ids), stride)) or [0]
    for n, s in enumerate(starts):
        left = max(0, s - overlap)
        chunk = ids[left : s + stride]
        inputs = torch.tensor([head + chunk], device=model.device)
        fresh = len(chunk) - (s - left)  # tokens scored by this window: the last ``fresh`` of the chunk
        with torch.inference_mode():  # logits only where needed: the LM head and softmax are a large share
            logits = model(input_ids=inputs, logits_to_keep=fresh + 1).logits[0, :-1]
            targets = inputs[0, inputs.shape[1] - fresh :].unsqueeze(1)
            bits = -torch.log_softmax(logits, dim=-1, dtype=torch.float32).gather(1, targets).squeeze(1) / LN2
        values[s : s + fresh] = bits.cpu().numpy()
        if progress:
            progress(n + 1, len(starts))
    return TokenScores(offsets, values)


def to_units(scores: TokenScores, units: Sequence[Unit], reduce: str = "sum") -> np.ndarray:
    """Aggregate token scores onto the units that contain each token's first character."""
    if not units:
        return np.zeros(0)
    starts = np.asarray([u.start for u in units])
    owner = np.clip(np.searchsorted(starts, scores.offsets[:, 0], side="right") - 1, 0, len(units) - 1)
    total = np.bincount(owner, weights=scores.values, minlength=len(units))
    if reduce == "sum":
        return total
    count = np.bincount(owner, minlength=len(units))
    if reduce == "mean":
        return np.divide(total, count, out=np.zeros(len(units)), where=count > 0)
    if reduce == "max":
        out = np.full(len(units), -np.inf)
        np.maximum.at(out, owner, scores.values)
        return np.where(np.isfinite(out), out, 0.0)
    raise ValueError(f"reduce must be sum, mean or max, got {reduce!r}")
