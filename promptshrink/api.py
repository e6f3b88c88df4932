"""The public entry points `compress` and `compress_batch`: keyword wrappers over `promptshrink.pipeline`.

Their keywords are the fields of `promptshrink.request.CompressOptions` (budget ``rate`` | ``target_tokens``,
``tokenizer``, ``question``, ``keep``, ``protect_numbers``, ``seed``, ``split_question``, ``timeout_s``,
``device``, ``progress``); every other keyword is an option of the method (`promptshrink.describe_methods()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .methods.base import CompressionRequest
from .pipeline import compress_texts, make_request
from .registry import get_compressor
from .request import DEFAULT_METHOD, CompressOptions, check_text, check_unicode
from .result import CompressionResult
from .target_tokenizer import get_tokenizer

__all__ = ["DEFAULT_METHOD", "build_request", "check_unicode", "compress", "compress_batch", "get_compressor"]


def build_request(text: str, **options: Any) -> CompressionRequest:
    """A validated `CompressionRequest` of ``text`` (for driving a compressor directly, e.g. in training)."""
    opts = CompressOptions(**options)
    return make_request(check_text(text), opts, get_tokenizer(opts.tokenizer), opts.deadline())


def compress(text: str, method: str = DEFAULT_METHOD, **options: Any) -> CompressionResult:
    """Compress ``text`` to ``rate`` (kept fraction) or ``target_tokens`` in the ``tokenizer`` of the target LLM.

    ``keep`` lists strings that must survive; code blocks and URLs are always protected. ``device`` (``auto``,
    ``cpu``, ``cuda``, ``cuda:N``; default ``$PROMPTSHRINK_DEVICE``, else auto) is where an LM-scored method runs
    its models, in bf16 on GPU. ``timeout_s`` bounds the work: past it the method stops at its next window or
    stage with `CompressionTimeoutError`. ``split_question`` keeps a trailing question verbatim and compresses
    the context before it for that question. Other keywords: see `CompressOptions`; unknown ones go to the method.
    """
    return compress_texts([text], CompressOptions.from_kwargs(method=method, **options))[0]


def compress_batch(
    texts: Sequence[str],
    method: str = DEFAULT_METHOD,
    *,
    questions: Sequence[str | None] | None = None,
    **options: Any,
) -> list[CompressionResult]:
    """`compress` of many texts (``questions[i]`` goes with ``texts[i]``), with the LM passes of all of them run
    together (windows length-sorted and packed into padded batches); each result equals compressing one by one.
    ``timeout_s`` bounds the whole call.
    """
    return compress_texts(texts, CompressOptions.from_kwargs(method=method, **options), questions)
