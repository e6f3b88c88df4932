"""promptshrink: prompt compression behind one interface."""

from .api import compress, compress_batch, get_compressor
from .errors import (
    BudgetError,
    CompressionTimeoutError,
    InvalidInputError,
    ModelUnavailableError,
    PromptShrinkError,
    UnknownMethodError,
    UnknownTokenizerError,
)
from .registry import describe_methods
from .result import CompressionResult, MessagesResult, PassagesResult, SegmentDecision
from .structured import compress_messages, compress_passages
from .target_tokenizer import get_tokenizer

__version__ = "0.1.0"
__all__ = [
    "BudgetError",
    "CompressionResult",
    "CompressionTimeoutError",
    "InvalidInputError",
    "ModelUnavailableError",
    "PromptShrinkError",
    "SegmentDecision",
    "UnknownMethodError",
    "UnknownTokenizerError",
    "MessagesResult",
    "PassagesResult",
    "compress",
    "compress_batch",
    "compress_messages",
    "compress_passages",
    "describe_methods",
    "get_compressor",
    "get_tokenizer",
]
