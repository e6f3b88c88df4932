"""Token counting in the *target* LLM's tokenizer (tiktoken encodings offline, or a Hugging Face tokenizer)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Protocol

from .errors import ModelUnavailableError, UnknownTokenizerError
from .paths import models_dir

DEFAULT_TOKENIZER = "cl100k_base"
_LOCK = threading.Lock()


class TargetTokenizer(Protocol):
    """What the budgeting code needs from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...


@dataclass
class TiktokenTokenizer:
    """A tiktoken encoding; special-token strings in user text are counted as plain text, never rejected."""

    name: str
    encoding: object

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, disallowed_special=())  # type: ignore[attr-defined]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        batch = self.encoding.encode_ordinary_batch(list(texts))  # type: ignore[attr-defined]
        return [len(ids) for ids in batch]


@dataclass
class HFTokenizer:
    """A Hugging Face tokenizer (for open models); counts exclude special tokens."""

    name: str
    tokenizer: object

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_many(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        return [len(x) for x in ids]


def _bundled_ranks(file_name: str, expected_sha256: str) -> dict[bytes, int]:
    from tiktoken.load import load_tiktoken_bpe

    path = models_dir() / "tiktoken" / file_name
    if not path.is_file():
        raise ModelUnavailableError(
            f"tiktoken file {path} is missing; reinstall promptshrink or set PROMPTSHRINK_MODELS_DIR"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected_sha256:
        raise ModelUnavailableError(f"{path} has sha256 {digest}, expected {expected_sha256}: the file is corrupt")
    return load_tiktoken_bpe(str(path), expected_hash=expected_sha256)


@lru_cache(maxsize=1)
def _bundled_manifest() -> dict[str, dict[str, str]]:
    return json.loads((models_dir() / "tiktoken" / "manifest.json").read_text())["encodings"]


def bundled_encoding_name(name: str) -> str | None:
    """The bundled tiktoken encoding that ``name`` (an encoding or an OpenAI model name) uses, else None.

    Pure name mapping: nothing is loaded, so it is safe on an event loop and never touches the network.
    """
    from tiktoken.model import MODEL_PREFIX_TO_ENCODING, MODEL_TO_ENCODING

    name = name.strip()
    encoding_name = MODEL_TO_ENCODING.get(name)
    if encoding_name is None:
        encoding_name = next((enc for p, enc in MODEL_PREFIX_TO_ENCODING.items() if name.startswith(p)), name)
    return encoding_name if encoding_name in _bundled_manifest() else None


@cache  # one Encoding per bundled encoding, shared by every model name that maps to it
def _bundled_encoding(name: str) -> object | None:
    """Build a tiktoken Encoding from the files shipped in models/tiktoken (see its manifest)."""
    import tiktoken
    from tiktoken_ext import openai_public

    entry = _bundled_manifest().get(name)
    if entry is None:
        return None
    constructor = openai_public.ENCODING_CONSTRUCTORS[entry.get("constructor", name)]
    # tiktoken's constructors fetch their rank file by URL; hand them the verified local file instead.
    with _LOCK:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *_a, **_k: _bundled_ranks(entry["file"], entry["sha256"])
        try:
            params = constructor()
        finally:
            openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**params)


@lru_cache(maxsize=16)
def get_tokenizer(name: str = DEFAULT_TOKENIZER) -> TargetTokenizer:
    """Resolve a target tokenizer.

    Accepts a tiktoken encoding name (all of tiktoken's encodings ship in ``models/tiktoken``, checked by
    sha256), an OpenAI model name (``gpt-4o``, ``text-davinci-003``), or ``hf:<model id or local path>`` for a
    Hugging Face tokenizer. tiktoken encodings never touch the network.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownTokenizerError("tokenizer must be a non-empty string such as 'cl100k_base'")
    name = name.strip()
    if name.startswith("hf:"):
        from .model_loading import load_tokenizer

        return HFTokenizer(name, load_tokenizer(name[3:]))
    encoding_name = bundled_encoding_name(name)
    if encoding_name is None:
        raise UnknownTokenizerError(
            f"unknown tokenizer {name!r}: use one of {sorted(_bundled_manifest())}, an OpenAI model name, "
            "or 'hf:<model id or path>'"
        )
    return TiktokenTokenizer(name, _bundled_encoding(encoding_name))
