"""Token counting in the *target* LLM's tokenizer (tiktoken encodings offline, or a Hugging Face tokenizer)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Protocol

import numpy as np

from .errors import ModelUnavailableError, UnknownTokenizerError
from .paths import models_dir

DEFAULT_TOKENIZER = "cl100k_base"
_LOCK = threading.Lock()
# Unit texts up to this many characters have their token count memoised (words and phrases repeat a lot).
_MEMO_CHARS = 64
_MEMO_ENTRIES = 200_000


class TargetTokenizer(Protocol):
    """What the budgeting code needs from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...

    def count_spans(self, text: str, starts: Sequence[int]) -> tuple[int, list[int]]: ...


@dataclass
class TiktokenTokenizer:
    """A tiktoken encoding; special-token strings in user text are counted as plain text, never rejected."""

    name: str
    encoding: object
    _memo: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _byte_lengths: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)  # type: ignore[attr-defined]

    def count(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(text))  # type: ignore[attr-defined]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Per-text counts, one encode each in this thread (tiktoken's batch call starts a thread pool and a
        future per text, which costs more than encoding a word); short texts are memoised."""
        encode, memo = self.encoding.encode_ordinary, self._memo  # type: ignore[attr-defined]
        if len(memo) > _MEMO_ENTRIES:
            memo.clear()
        counts = []
        for text in texts:
            n = memo.get(text)
            if n is None:
                n = len(encode(text))
                if len(text) <= _MEMO_CHARS:
                    memo[text] = n
            counts.append(n)
        return counts

    def count_spans(self, text: str, starts: Sequence[int]) -> tuple[int, list[int]]:
        """Tokens of ``text`` and, with one encode, how many of them start in each span ``[starts[i],
        starts[i+1])`` (sorted offsets; tokens before ``starts[0]`` count for span 0)."""
        ids = np.asarray(self.encoding.encode_ordinary(text), dtype=np.int64)  # type: ignore[attr-defined]
        lengths = self.byte_lengths(ids)
        offsets = np.cumsum(lengths) - lengths  # byte offset of each token
        if not text.isascii():  # byte offset -> index of the character that byte belongs to
            raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            offsets = (np.cumsum((raw & 0xC0) != 0x80) - 1)[offsets]
        return len(ids), span_counts(offsets, starts)

    def byte_lengths(self, ids: np.ndarray) -> np.ndarray:
        """Length in bytes of each token id, from a per-encoding table filled in as ids are first seen."""
        table = self._byte_lengths
        if table is None:
            table = self._byte_lengths = np.full(self.encoding.n_vocab, -1, dtype=np.int64)  # type: ignore[attr-defined]
        lengths = table[ids]
        if (lengths < 0).any():
            decode = self.encoding.decode_single_token_bytes  # type: ignore[attr-defined]
            for token in np.unique(ids[lengths < 0]).tolist():
                table[token] = len(decode(token))
            lengths = table[ids]
        return lengths


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

    def count_spans(self, text: str, starts: Sequence[int]) -> tuple[int, list[int]]:
        """As `TiktokenTokenizer.count_spans`, from the offsets of a fast tokenizer (else one count per span)."""
        if not getattr(self.tokenizer, "is_fast", False):
            bounds = [*starts[1:], len(text)]
            return self.count(text), self.count_many([text[a:b] for a, b in zip(starts, bounds)])
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
        return len(enc["input_ids"]), span_counts([a for a, _ in enc["offset_mapping"]], starts)


def span_counts(offsets: Sequence[int], starts: Sequence[int]) -> list[int]:
    """How many of the sorted token ``offsets`` fall in each span that begins at ``starts[i]``."""
    if not starts:
        return []
    owner = np.searchsorted(np.asarray(starts), np.asarray(offsets, dtype=np.int64), side="right") - 1
    return np.bincount(np.clip(owner, 0, None), minlength=len(starts)).tolist()


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


def bundled_encoding_names() -> list[str]:
    """The tiktoken encodings shipped in ``models/tiktoken``."""
    return sorted(_bundled_manifest())


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
