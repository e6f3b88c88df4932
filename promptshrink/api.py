"""The public entry point: `compress(text, method=..., rate=... | target_tokens=..., ...)`."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from .budget import make_budget
from .errors import InvalidInputError
from .json_splice import compress_request, json_regions
from .methods.base import CompressionRequest, Compressor, ProgressFn
from .model_loading import lm_stack, use_device
from .registry import get_method
from .result import CompressionResult
from .target_tokenizer import DEFAULT_TOKENIZER, get_tokenizer

DEFAULT_METHOD = "auto"
_INSTANCES: dict[tuple[str, tuple[tuple[str, Any], ...]], Compressor] = {}
_INSTANCES_LOCK = threading.Lock()


def get_compressor(method: str = DEFAULT_METHOD, **options: Any) -> Compressor:
    """A compressor instance, shared between calls with the same options (so models load once)."""
    cls = get_method(method)
    if cls.requires_lm:
        lm_stack()
    try:
        # the type is part of the key: 1 == True == 1.0 must not share an instance (1 is not a valid flag)
        key = (method, tuple(sorted((k, type(v).__name__, v) for k, v in options.items())))
        hash(key)
    except TypeError as exc:
        raise InvalidInputError(f"method options must be plain values: {exc}") from exc
    with _INSTANCES_LOCK:
        if key not in _INSTANCES:
            try:
                _INSTANCES[key] = cls(**options)
            except TypeError as exc:
                raise InvalidInputError(f"bad options for method {method!r}: {exc}") from exc
        return _INSTANCES[key]


def build_request(
    text: str,
    *,
    rate: float | None = None,
    target_tokens: int | None = None,
    tokenizer: str = DEFAULT_TOKENIZER,
    question: str | None = None,
    keep: Sequence[str] = (),
    protect_numbers: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
    timeout_s: float | None = None,
) -> CompressionRequest:
    """Validate user input into a request; every problem raises a `PromptShrinkError` with a clear message."""
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("text is empty: nothing to compress")
    if question is not None and not isinstance(question, str):
        raise InvalidInputError("question must be a string")
    if isinstance(keep, str) or not all(isinstance(k, str) for k in keep):
        raise InvalidInputError("keep must be a list of strings")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError("seed must be an integer")
    check_unicode("text", text)
    check_unicode("question", question or "")
    for k in keep:
        check_unicode("keep", k)
    return CompressionRequest(
        text=text,
        budget=make_budget(rate, target_tokens),
        tokenizer=get_tokenizer(tokenizer),
        question=question.strip() or None if question else None,
        keep=tuple(k for k in keep if k),
        protect_numbers=protect_numbers,
        seed=seed,
        progress=progress,
        deadline=deadline_after(timeout_s),
    )


def check_unicode(name: str, value: str) -> None:
    """Refuse lone surrogates (e.g. a JSON ``"\\ud800"``): no tokenizer or UTF-8 encoder accepts them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{name} holds an unpaired UTF-16 surrogate {value[exc.start]!r} at character {exc.start}; "
            "send valid Unicode (pair the surrogates or drop that character)"
        ) from None


def deadline_after(timeout_s: float | None) -> float | None:
    """The `time.monotonic()` deadline ``timeout_s`` seconds from now (None: no limit)."""
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise InvalidInputError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return time.monotonic() + timeout_s


def compress(
    text: str,
    method: str = DEFAULT_METHOD,
    *,
    rate: float | None = None,
    target_tokens: int | None = None,
    tokenizer: str = DEFAULT_TOKENIZER,
    question: str | None = None,
    keep: Sequence[str] = (),
    protect_numbers: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
    device: str | None = None,
    timeout_s: float | None = None,
    **method_options: Any,
) -> CompressionResult:
    """Compress ``text`` to ``rate`` (kept fraction) or ``target_tokens`` in the ``tokenizer`` of the target LLM.

    ``keep`` lists strings that must survive; code blocks and URLs are always protected. ``device`` (``auto``,
    ``cpu``, ``cuda``, ``cuda:N``; default ``$PROMPTSHRINK_DEVICE``, else auto) is where an LM-scored method runs
    its models, in bf16 on GPU. ``timeout_s`` bounds the work: past it the method stops at its next window or
    stage with `CompressionTimeoutError`. Extra keyword arguments go to the method (see
    `promptshrink.describe_methods()`).
    """
    request = build_request(
        text,
        rate=rate,
        target_tokens=target_tokens,
        tokenizer=tokenizer,
        question=question,
        keep=keep,
        protect_numbers=protect_numbers,
        seed=seed,
        progress=progress,
        timeout_s=timeout_s,
    )
    compressor = get_compressor(method, **method_options)
    if device is None or not compressor.requires_lm:
        return compress_request(compressor, request)
    with use_device(device):
        return compress_request(compressor, request)


def compress_batch(
    texts: Sequence[str],
    method: str = DEFAULT_METHOD,
    *,
    rate: float | None = None,
    target_tokens: int | None = None,
    tokenizer: str = DEFAULT_TOKENIZER,
    questions: Sequence[str | None] | None = None,
    keep: Sequence[str] = (),
    protect_numbers: bool = False,
    seed: int = 0,
    progress: ProgressFn | None = None,
    device: str | None = None,
    timeout_s: float | None = None,
    **method_options: Any,
) -> list[CompressionResult]:
    """`compress` of many texts (``questions[i]`` goes with ``texts[i]``), with the LM passes of all of them run
    together (windows length-sorted and packed into padded batches); each result equals compressing one by one.
    ``timeout_s`` bounds each text's work, as in `compress`; ``progress`` is every text's progress callback (it
    may raise to stop the whole batch, e.g. once its callers have gone).
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError("texts must be a list of strings")
    questions = list(questions) if questions is not None else [None] * len(texts)
    if len(questions) != len(texts):
        raise InvalidInputError(f"{len(questions)} questions for {len(texts)} texts")
    requests = [
        build_request(
            text,
            rate=rate,
            target_tokens=target_tokens,
            tokenizer=tokenizer,
            question=question,
            keep=keep,
            protect_numbers=protect_numbers,
            seed=seed,
            progress=progress,
            timeout_s=timeout_s,
        )
        for text, question in zip(texts, questions)
    ]
    compressor = get_compressor(method, **method_options)
    with use_device(device if compressor.requires_lm else None):
        plain = [i for i, r in enumerate(requests) if not json_regions(r.text)]
        results: list[CompressionResult | None] = [None] * len(requests)
        for i, result in zip(plain, compressor.compress_many([requests[i] for i in plain])):
            results[i] = result
        for i, request in enumerate(requests):
            if results[i] is None:  # JSON goes through the string-value splicer
                results[i] = compress_request(compressor, request)
    return [r for r in results if r is not None]
