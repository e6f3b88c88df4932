"""Offline-first model loading: manifest aliases resolve to weights shipped inside installed packages.

The manifest, the files' integrity checks and the GGUF cache are in `promptshrink.model_files`; this module
loads the models (tokenizers, causal LMs, encoders) once per process, on the chosen device and dtype.

A name is resolved in this order: an alias from ``models/manifest.json`` (a package that bundles the weights),
an existing local directory, then a Hugging Face model id (needs the hub, or its local cache when offline).
Every model is loaded once per process and shared.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache, wraps
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .errors import InvalidInputError, ModelUnavailableError
from .model_files import (  # the manifest and integrity half, re-exported: callers import both from here
    CACHE_FORMAT,
    DEFAULT_EMBEDDER,
    DEFAULT_LM,
    INERT_FILES,
    LARGE_LM,
    ModelSpec,
    cache_dir,
    cached_conversion,
    converted_hashes,
    converter_version,
    load_artefact,
    manifest,
    model_key,
    resolve,
    verify_files,
)

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_EMBEDDER",
    "DEFAULT_LM",
    "DEVICE_ENV",
    "INERT_FILES",
    "LARGE_LM",
    "LOAD_LOCK",
    "ModelSpec",
    "cache_dir",
    "cached_conversion",
    "converted_hashes",
    "converter_version",
    "default_dtype",
    "lm_stack",
    "load_artefact",
    "load_causal_lm",
    "load_encoder",
    "load_tokenizer",
    "manifest",
    "model_key",
    "resolve",
    "resolve_device",
    "set_torch_threads",
    "use_device",
    "verify_files",
]
logger = logging.getLogger(__name__)
LOAD_LOCK = threading.RLock()
DEVICE_ENV = "PROMPTSHRINK_DEVICE"
_DEVICE: ContextVar[str | None] = ContextVar("promptshrink_device", default=None)
_DEVICE_RE = re.compile(r"cuda(?::(\d+))?")
T = TypeVar("T")


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    where, local = resolve(name)
    try:
        return loader.from_pretrained(where, local_files_only=local or _offline(), **kwargs)
    except (OSError, ValueError) as exc:
        if local:
            raise ModelUnavailableError(f"could not load model {name!r} from {where}: {exc}") from exc
        bundled = "; ".join(f"{a} = {s.hf_id} ({s.install_hint()})" for a, s in manifest().items())
        raise ModelUnavailableError(
            f"model {name!r} is not a bundled alias or a local directory, and the Hugging Face hub could not "
            f"provide it ({type(exc).__name__}). Offline, use a bundled model: {bundled}"
        ) from exc


def lm_stack() -> tuple[ModuleType, ModuleType]:
    """(torch, transformers), imported once under the load lock.

    Concurrent first imports of transformers' lazy module raised ImportError in some threads, so every model
    path imports through here. Without the ``lm`` extra this raises `ModelUnavailableError` naming it.
    """
    with LOAD_LOCK:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ModelUnavailableError(
                f"the LM-scored methods need torch and transformers ({exc}): pip install 'promptshrink[lm]' "
                "(with torch==2.13.0 first for the CPU build)"
            ) from exc
        return torch, transformers


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in (
        "",
        "0",
    )


def _load_once(load: Callable[..., T]) -> Callable[..., T]:
    """Cache ``load`` per arguments so each model is loaded once per process: concurrent first callers wait
    for the one that loads (`functools.lru_cache` would let every one of them load its own copy)."""
    done: dict[tuple[Any, ...], T] = {}
    signature = inspect.signature(load)

    @wraps(load)
    def once(*args: Any, **kwargs: Any) -> T:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = bound.args
        if key in done:
            return done[key]
        with LOAD_LOCK:
            if key not in done:
                done[key] = load(*key)
            return done[key]

    once.loaded = lambda: list(done)  # type: ignore[attr-defined]  # the argument tuples loaded so far
    return once


@_load_once
def load_tokenizer(name: str = DEFAULT_LM) -> Any:
    _, transformers = lm_stack()
    return _from_pretrained(transformers.AutoTokenizer, name)


def set_torch_threads(concurrent_jobs: int = 1) -> int:
    """Give each of ``concurrent_jobs`` parallel compressions an equal share of the cores; returns the count.

    Oversubscribed OpenMP threads spin while a peer is descheduled: on 2 busy cores a 2-thread forward pass
    was measured 10x slower than a 1-thread one. $PROMPTSHRINK_TORCH_THREADS overrides. Without torch: 0.
    """
    try:
        torch, _ = lm_stack()
    except ModelUnavailableError:
        return 0
    forced = os.environ.get("PROMPTSHRINK_TORCH_THREADS")
    cores = os.cpu_count() or 1
    threads = int(forced) if forced else max(1, (cores - 1) // max(1, concurrent_jobs))
    torch.set_num_threads(threads)
    return threads


def default_dtype(device: str = "cpu") -> Any:
    """bfloat16 where the hardware runs it fast (GPUs, CPUs with AMX/AVX512-BF16), else float32.

    Override with PROMPTSHRINK_DTYPE=float32|bfloat16|float16.
    """
    import torch

    forced = os.environ.get("PROMPTSHRINK_DTYPE")
    if forced:
        return getattr(torch, forced)
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


@lru_cache(maxsize=1)
def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(device: str | None = None) -> str:
    """The torch device the LM-scored methods run on: ``cpu`` or ``cuda:N``.

    ``device`` is ``auto`` (CUDA when present), ``cpu``, ``cuda`` (the current CUDA device) or ``cuda:N``;
    None means the device set by `use_device`, else ``$PROMPTSHRINK_DEVICE``, else ``auto``.
    """
    chosen = device or _DEVICE.get() or os.environ.get(DEVICE_ENV) or "auto"
    if not isinstance(chosen, str):
        raise InvalidInputError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {chosen!r}")
    chosen = chosen.strip().lower()
    if chosen == "cpu":
        return "cpu"
    match = _DEVICE_RE.fullmatch(chosen)
    if chosen != "auto" and match is None:
        raise InvalidInputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {chosen!r}")
    torch, _ = lm_stack()
    if not torch.cuda.is_available():
        if chosen == "auto":
            return "cpu"
        raise ModelUnavailableError(f"device {chosen!r} asked for, but torch sees no CUDA device; use 'cpu'")
    index = torch.cuda.current_device() if match is None or match.group(1) is None else int(match.group(1))
    if index >= torch.cuda.device_count():
        raise InvalidInputError(f"device cuda:{index} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}"


@contextmanager
def use_device(device: str | None) -> Iterator[None]:
    """Run the LM-scored methods called inside the block (in this thread) on ``device``; None changes nothing."""
    if device is None:
        yield
        return
    token = _DEVICE.set(resolve_device(device))
    try:
        yield
    finally:
        _DEVICE.reset(token)


def load_causal_lm(name: str = DEFAULT_LM, device: str | None = None, attention: str = "sdpa") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode on ``device`` (see `resolve_device`), bf16 on GPU (`default_dtype`).

    One copy per (model, device, dtype). Use ``attention="eager"`` when a method reads attention weights.
    """
    resolved = resolve_device(device)
    return _load_causal_lm(name, resolved, attention, str(default_dtype(resolved)))


@_load_once
def _load_causal_lm(name: str, device: str, attention: str, dtype: str) -> tuple[Any, Any]:
    torch, transformers = lm_stack()
    tokenizer = load_tokenizer(name)
    model = _from_pretrained(
        transformers.AutoModelForCausalLM,
        name,
        attn_implementation=attention,
        dtype=getattr(torch, dtype.removeprefix("torch.")),
    )
    model.eval().to(device)
    return model, tokenizer


def load_encoder(name: str = DEFAULT_EMBEDDER, device: str | None = None) -> tuple[Any, Any]:
    """(encoder, tokenizer) in eval mode on ``device`` (see `resolve_device`); float32 (a small encoder)."""
    return _load_encoder(name, resolve_device(device))


@_load_once
def _load_encoder(name: str, device: str) -> tuple[Any, Any]:
    _, transformers = lm_stack()
    tokenizer = load_tokenizer(name)
    model = _from_pretrained(transformers.AutoModel, name)
    model.eval().to(device)
    return model, tokenizer
