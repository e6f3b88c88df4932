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
    return surprisal_many([text], model_name, [prefix], overlap, max_window, progress=progress)[0]


@dataclass
class _Window:
    """One LM pass: ``ids`` (head + chunk) scores its last ``fresh`` tokens, which are text ``item``'s
    tokens ``at .. at + fresh``."""

    item: int
    at: int
    fresh: int
    ids: list[int]


def surprisal_many(
    texts: Sequence[str],
    model_name: str = DEFAULT_LM,
    prefixes: Sequence[str | None] | None = None,
    overlap: int = 128,
    max_window: int = 1024,
    batch_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[TokenScores]:
    """`surprisal` of many texts (each with its own optional prefix) with their windows run together.

    The windows of all texts are sorted by length and packed into right-padded batches of at most
    ``batch_tokens`` padded tokens (default: 16K on GPU, 2K on CPU, where batching buys little); causal
    attention keeps padding after a sequence from changing its logits, so no mask is needed. The LM head runs
    only on the positions that predict scored tokens. A (text, prefix) pair given more than once is scored once
    (e.g. the plain pass of one passage asked several questions).
    """
    import torch

    model, tokenizer = load_causal_lm(model_name)
    prefixes = list(prefixes) if prefixes is not None else [None] * len(texts)
    window = lm_window(model, max_window)
    windows: list[_Window] = []
    unique = {text: tokenize_with_offsets(tokenizer, text) for text in dict.fromkeys(texts)}  # each text once
    passes = list(dict.fromkeys(zip(texts, prefixes)))  # each (text, prefix) pass once
    encoded = [unique[text] for text, _ in passes]
    for item, ((ids, _), (_, prefix)) in enumerate(zip(encoded, passes)):
        head = start_ids(tokenizer)
        if prefix:
            head = head + tokenizer(prefix, add_special_tokens=False)["input_ids"]
        head = head[: window // 4]  # a long question must not crowd out the text
        room = window - len(head)
        lap = min(overlap, room // 2)
        stride = room - lap
        for s in range(0, len(ids), stride):
            left = max(0, s - lap)
            chunk = ids[left : s + stride]
            windows.append(_Window(item, s, len(chunk) - (s - left), head + chunk))
    values = [np.zeros(len(ids), dtype=np.float64) for ids, _ in encoded]
    if batch_tokens is None:
        batch_tokens = 16384 if model.device.type == "cuda" else 2048
    order = sorted(range(len(windows)), key=lambda w: len(windows[w].ids))
    batches: list[list[int]] = []
    for w in order:  # ascending length: a batch's padded size is its count x its last window's length
        if batches and (len(batches[-1]) + 1) * len(windows[w].ids) <= batch_tokens:
            batches[-1].append(w)
        else:
            batches.append([w])
    pad = start_ids(tokenizer)[0]
    decoder, head_layer = model.get_decoder(), model.get_output_embeddings()
    done = 0
    for batch in batches:
        rows = [windows[w] for w in batch]
        width = max(len(r.ids) for r in rows)
        inputs = torch.tensor([r.ids + [pad] * (width - len(r.ids)) for r in rows], device=model.device)
        with torch.inference_mode():  # logits only where needed: the LM head and softmax are a large share
            hidden = decoder(input_ids=inputs).last_hidden_state
            where = [(b, len(r.ids) - r.fresh - 1, len(r.ids) - 1) for b, r in enumerate(rows)]
            picked = torch.cat([hidden[b, lo:hi] for b, lo, hi in where])
            targets = torch.cat([inputs[b, lo + 1 : hi + 1] for b, lo, hi in where]).unsqueeze(1)
            logp = torch.log_softmax(head_layer(picked), dim=-1, dtype=torch.float32).gather(1, targets)
        bits = (-logp[:, 0] / LN2).cpu().numpy()
        cursor = 0
        for r in rows:
            values[r.item][r.at : r.at + r.fresh] = bits[cursor : cursor + r.fresh]
            cursor += r.fresh
        done += len(rows)
        if progress:
            progress(done, len(windows))
    scored = {key: TokenScores(offsets, v) for key, (_, offsets), v in zip(passes, encoded, values)}
    return [scored[key] for key in zip(texts, prefixes)]


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
