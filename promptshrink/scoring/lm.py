"""Per-token signals from a causal LM over long text: surprisal (self-information) in windows with overlap.

On CUDA the scoring pass runs as CUDA graphs (one per padded batch shape; `PROMPTSHRINK_CUDA_GRAPHS`): a small
LM's eager forward spends most of its time launching kernels one by one from Python, a graph replay launches
them all at once. The passes are queued without waiting for the GPU (`start_surprisal`), so the caller can
segment the text while they run.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..model_loading import DEFAULT_LM, load_causal_lm
from ..segmentation import Unit

LN2 = float(np.log(2.0))
GRAPHS_ENV = "PROMPTSHRINK_CUDA_GRAPHS"
WIDTH_STEP = 128  # padded window widths are multiples of this (fewer distinct shapes, fewer graphs)
HEAD_CHUNK = 1024  # positions per LM-head block in the padded pass (bounds the logits' memory)
# Up to this many graph launches are queued by the caller itself; more go to a thread of their own, since a full
# launch queue blocks the launching thread (H100, 64 inputs batched: 150K tokens/s inline, 185-208K with the thread),
# while for a few the thread only contends for the GIL with the caller's segmentation (one 2K request: 12 ms inline,
# 22 ms with the thread; different hosts, so indicative).
INLINE_PARTS = 4
log = logging.getLogger(__name__)


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
    return tokenize_many(tokenizer, [text])[0]


def tokenize_many(tokenizer: object, texts: Sequence[str]) -> list[tuple[list[int], np.ndarray]]:
    """LM ids and character offsets of each text, in one tokenizer call (a fast tokenizer runs them in parallel)."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
    return [
        (list(ids), np.asarray(offsets, dtype=np.int64).reshape(-1, 2))
        for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"])
    ]


def start_ids(tokenizer: object) -> list[int]:
    """A start-of-text token so the first real token is predicted too."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return [int(value)]
    return tokenizer("\n", add_special_tokens=False)["input_ids"][:1]  # type: ignore[operator]


def cuda_graphs_enabled() -> bool:
    """Whether CUDA devices score through CUDA graphs: ``$PROMPTSHRINK_CUDA_GRAPHS`` (default on; CPU never)."""
    value = os.environ.get(GRAPHS_ENV, "1").strip().lower()
    if value in ("", "1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise InvalidInputError(f"{GRAPHS_ENV} must be on or off (1/0), got {value!r}")


def padded_width(width: int, window: int) -> int:
    """A batch's padded width: ``width`` rounded up to a multiple of `WIDTH_STEP`, at most the model window."""
    return max(width, min(-(-width // WIDTH_STEP) * WIDTH_STEP, window))


def row_parts(rows: int) -> list[int]:
    """``rows`` as powers of two, largest first: each part of a batch reuses one captured graph shape."""
    return [1 << b for b in reversed(range(rows.bit_length())) if rows >> b & 1]


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
    attention keeps padding after a sequence from changing its logits, so no mask is needed.
    """
    return start_surprisal(texts, model_name, prefixes, overlap, max_window, batch_tokens).collect(progress)


def start_surprisal(
    texts: Sequence[str],
    model_name: str = DEFAULT_LM,
    prefixes: Sequence[str | None] | None = None,
    overlap: int = 128,
    max_window: int = 1024,
    batch_tokens: int | None = None,
    graphs: bool | None = None,
) -> PendingScores:
    """Queue the passes of `surprisal_many`; ``.collect()`` waits for them. On CPU the passes run in ``collect``.

    ``graphs``: pad batches to captured shapes and replay CUDA graphs (default: `cuda_graphs_enabled` on CUDA;
    on CPU True runs the same padded pass without graphs).
    """
    model, tokenizer = load_causal_lm(model_name)
    prefixes = list(prefixes) if prefixes is not None else [None] * len(texts)
    window = lm_window(model, max_window)
    unique = dict(zip(dict.fromkeys(texts), tokenize_many(tokenizer, list(dict.fromkeys(texts)))))  # each text once
    asked = list(dict.fromkeys(p for p in prefixes if p))
    heads = dict(zip(asked, tokenizer(asked, add_special_tokens=False)["input_ids"])) if asked else {}
    windows: list[_Window] = []
    for item, (text, prefix) in enumerate(zip(texts, prefixes)):
        head = start_ids(tokenizer) + (heads[prefix] if prefix else [])
        head = head[: window // 4]  # a long question must not crowd out the text
        room = window - len(head)
        lap = min(overlap, room // 2)
        stride = room - lap
        ids = unique[text][0]
        for s in range(0, len(ids), stride):
            left = max(0, s - lap)
            chunk = ids[left : s + stride]
            windows.append(_Window(item, s, len(chunk) - (s - left), head + chunk))
    cuda = model.device.type == "cuda"
    if batch_tokens is None:
        batch_tokens = 16384 if cuda else 2048
    order = sorted(range(len(windows)), key=lambda w: len(windows[w].ids))
    batches: list[list[_Window]] = []
    for w in order:  # ascending length: a batch's padded size is its count x its last window's length
        if batches and (len(batches[-1]) + 1) * len(windows[w].ids) <= batch_tokens:
            batches[-1].append(windows[w])
        else:
            batches.append([windows[w]])
    pending = PendingScores([unique[t] for t in texts], len(windows))
    pad = start_ids(tokenizer)[0]
    if not ((cuda and cuda_graphs_enabled()) if graphs is None else graphs):
        for rows in batches:  # eager: each batch runs when `collect` reaches it (progress and deadlines between)
            pending.add(rows, lambda rows=rows: _picked_pass(model, rows, pad))
        return pending
    parts = []
    for rows in batches:
        at = 0
        for part in row_parts(len(rows)):
            piece = rows[at : at + part]
            at += part
            ids = np.full((part, padded_width(len(piece[-1].ids), window)), pad, dtype=np.int64)
            for r, row in enumerate(piece):
                ids[r, : len(row.ids)] = row.ids
            parts.append((piece, ids, at == len(rows)))
    runner = _graph_runner(model) if cuda else None

    def launch() -> None:
        for piece, ids, last in parts:
            pending.add(piece, _padded_pass(model, runner, ids), last)

    if runner is None or len(parts) <= INLINE_PARTS:
        launch()
    else:  # many graphs fill the GPU's launch queue, which blocks the launching thread: not the caller's
        pending.launch_in_thread(launch)
    return pending


@dataclass
class PendingScores:
    """Scores whose LM passes are queued; `collect` waits for them and spreads them over the texts' tokens."""

    encoded: list[tuple[list[int], np.ndarray]]
    total: int
    parts: list[tuple[list[_Window], Any, bool]] = field(default_factory=list)
    launcher: threading.Thread | None = None
    error: BaseException | None = None

    def launch_in_thread(self, launch: Callable[[], None]) -> None:
        """Run ``launch`` (which queues the passes and `add`s them) in a thread of its own; `collect` joins it."""

        def run() -> None:
            try:
                launch()
            except BaseException as exc:  # re-raised by collect, in the caller's thread
                self.error = exc

        self.launcher = threading.Thread(target=run, name="promptshrink-lm-launch", daemon=True)
        self.launcher.start()

    def add(self, rows: list[_Window], out: Any, last: bool = True) -> None:
        """``out`` (or what calling it returns): log-probs of each row's next tokens ([rows, width - 1]) or of
        the rows' fresh tokens only (flat, row after row); ``last``: the part ends a batch (for progress)."""
        self.parts.append((rows, out, last))

    def collect(self, progress: Callable[[int, int], None] | None = None) -> list[TokenScores]:
        """Wait for the passes; ``progress(done, total)`` after each batch (it may raise to stop the work)."""
        if self.launcher is not None:
            self.launcher.join()
            self.launcher = None
        if self.error is not None:
            raise self.error
        values = [np.zeros(len(ids), dtype=np.float64) for ids, _ in self.encoded]
        done = 0
        for rows, out, last in self.parts:
            logp = _to_numpy(out() if callable(out) else out)
            cursor = 0
            for r, row in enumerate(rows):
                if logp.ndim == 2:  # position p predicts token p + 1
                    end = len(row.ids) - 1
                    bits = logp[r, end - row.fresh : end]
                else:
                    bits = logp[cursor : cursor + row.fresh]
                    cursor += row.fresh
                values[row.item][row.at : row.at + row.fresh] = -bits / LN2
            done += len(rows)
            if progress and last:
                progress(done, self.total)
        self.parts = []
        return [TokenScores(offsets, v) for (_, offsets), v in zip(self.encoded, values)]


def _to_numpy(out: Any) -> np.ndarray:
    if isinstance(out, tuple):  # (pinned host tensor, event of its copy)
        out[1].synchronize()
        out = out[0]
    return out.float().cpu().numpy() if hasattr(out, "numpy") else np.asarray(out)


def _picked_pass(model: Any, rows: list[_Window], pad: int) -> Any:
    """Eager pass of one batch: the LM head runs only on the positions that predict fresh tokens."""
    import torch

    width = max(len(r.ids) for r in rows)
    inputs = torch.tensor([r.ids + [pad] * (width - len(r.ids)) for r in rows], device=model.device)
    with torch.inference_mode():  # logits only where needed: the LM head and softmax are a large share
        hidden = model.get_decoder()(input_ids=inputs, use_cache=False).last_hidden_state
        where = [(b, len(r.ids) - r.fresh - 1, len(r.ids) - 1) for b, r in enumerate(rows)]
        picked = torch.cat([hidden[b, lo:hi] for b, lo, hi in where])
        targets = torch.cat([inputs[b, lo + 1 : hi + 1] for b, lo, hi in where]).unsqueeze(1)
        logits = model.get_output_embeddings()(picked)
        return torch.log_softmax(logits, dim=-1, dtype=torch.float32).gather(1, targets)[:, 0].cpu()


def token_logprobs(model: Any, ids: Any) -> Any:
    """log P(ids[:, p + 1] | ids[:, :p + 1]) at every position p of right-padded rows ``ids`` [B, W]: [B, W - 1] fp32.

    On CUDA a Llama-family decoder runs fused (`fused_llama`). The LM head runs on every position, `HEAD_CHUNK` at
    a time; on CUDA its log-softmax is one fused pass over the logits (`promptshrink.kernels.token_logprob`),
    elsewhere the PyTorch reference. Static shapes throughout, so it can be captured as a CUDA graph.
    """
    import torch

    from .fused_llama import fused_decoder

    fused = fused_decoder(model) if ids.is_cuda else None
    hidden = fused(ids) if fused else model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    hidden = hidden[:, :-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    targets = ids[:, 1:].reshape(-1)
    head = model.get_output_embeddings()
    out = [logprob_rows(head(h), t) for h, t in zip(flat.split(HEAD_CHUNK), targets.split(HEAD_CHUNK))]
    return torch.cat(out).view(ids.shape[0], -1)


def logprob_rows(logits: Any, targets: Any) -> Any:
    """log softmax(logits)[r, targets[r]] in fp32 (Triton kernel on CUDA, PyTorch reference elsewhere)."""
    import torch

    from ..kv.dispatch import triton_module

    kernel = triton_module("token_logprob") if logits.is_cuda else None
    if kernel is not None:
        return kernel.token_logprobs(logits, targets)
    return torch.log_softmax(logits, dim=-1, dtype=torch.float32).gather(1, targets[:, None])[:, 0]


def _padded_pass(model: Any, runner: _Graphs | None, ids: np.ndarray) -> Any:
    """`token_logprobs` of one padded part: on CUDA through ``runner``'s graphs, the result copied to pinned host
    memory without waiting (returns (host tensor, event)); on CPU computed now."""
    import torch

    inputs = torch.from_numpy(ids)
    if runner is None:
        with torch.inference_mode():
            return token_logprobs(model, inputs)
    with torch.cuda.device(model.device):  # graphs, their pool and the event on the model's GPU
        out = runner(inputs.pin_memory())
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
    return host, event


class _Graphs:
    """CUDA graphs of `token_logprobs` for one model, one per padded (rows, width), captured on first use.

    One lock guards the static input/output buffers: a caller copies its ids in, replays and copies the output
    out, all queued on the same stream, so the next caller's copy-in runs after them on the GPU too.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.lock = threading.Lock()
        self.graphs: dict[tuple[int, int], tuple[Any, Any, Any] | None] = {}
        self.pool: Any = None

    def __call__(self, ids: Any) -> Any:
        import torch

        key = tuple(ids.shape)
        with self.lock, torch.inference_mode():
            if key not in self.graphs:
                self.graphs[key] = self._capture(key)
            entry = self.graphs[key]
            if entry is None:  # capture failed: run eagerly
                return token_logprobs(self.model, ids.to(self.model.device, non_blocking=True))
            graph, static_in, static_out = entry
            static_in.copy_(ids, non_blocking=True)
            graph.replay()
            return static_out.clone()

    def _capture(self, shape: tuple[int, int]) -> tuple[Any, Any, Any] | None:
        import torch

        device = self.model.device
        static_in = torch.zeros(shape, dtype=torch.long, device=device)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up outside the capture: lazy initialisation, kernel compilation
                token_logprobs(self.model, static_in)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                static_out = token_logprobs(self.model, static_in)
        except RuntimeError as exc:  # e.g. another thread's work on the legacy default stream broke the capture
            log.warning("CUDA graph capture of shape %s failed (%s); that shape runs eagerly", shape, exc)
            return None
        return graph, static_in, static_out


_RUNNERS: weakref.WeakKeyDictionary[Any, _Graphs] = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def _graph_runner(model: Any) -> _Graphs:
    with _RUNNERS_LOCK:
        if model not in _RUNNERS:
            _RUNNERS[model] = _Graphs(model)
        return _RUNNERS[model]


def owners(starts: Sequence[int] | np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Index of the span holding each token's first character, for spans given by their sorted ``starts``
    (a token before the first span counts as the first span's)."""
    starts = np.asarray(starts)
    return np.clip(np.searchsorted(starts, offsets[:, 0], side="right") - 1, 0, max(0, len(starts) - 1))


def to_units(scores: TokenScores, units: Sequence[Unit], reduce: str = "sum") -> np.ndarray:
    """Aggregate token scores onto the units that contain each token's first character."""
    if not units:
        return np.zeros(0)
    owner = owners([u.start for u in units], scores.offsets)
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
