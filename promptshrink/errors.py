"""Error types: every user mistake maps to one of these, with a message that says what to do.

Each class carries its stable ``code`` and the HTTP ``status`` the service answers it with; `library_errors`
derives the service's and the client's tables from these classes, so a new error class is one class here.
"""

from __future__ import annotations


class PromptShrinkError(Exception):
    """Base class; `code` is a stable machine-readable identifier used by the CLI and the service, `status` the
    HTTP status the service answers with."""

    code = "error"
    status = 422


class InvalidInputError(PromptShrinkError, ValueError):
    """The text, rate, budget or another argument is not acceptable."""

    code = "invalid_input"


class BudgetError(InvalidInputError):
    """The budget cannot be met without dropping content the caller asked to keep."""

    code = "budget_unsatisfiable"


class CompressionTimeoutError(PromptShrinkError, TimeoutError):
    """The compression passed its deadline (``timeout_s``) and stopped between windows or stages."""

    code = "timeout"
    status = 504


class UnknownMethodError(PromptShrinkError, KeyError):
    """No compressor is registered under the requested name."""

    code = "unknown_method"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownPressError(PromptShrinkError, KeyError):
    """No KV-cache press is registered under the requested name."""

    code = "unknown_press"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownTokenizerError(PromptShrinkError, ValueError):
    """The target tokenizer name cannot be resolved."""

    code = "unknown_tokenizer"


class ModelUnavailableError(PromptShrinkError, RuntimeError):
    """A model is neither installed from a package nor reachable; the message names the fix."""

    code = "model_unavailable"
    status = 503


def library_errors() -> dict[str, type[PromptShrinkError]]:
    """Every library error class by its ``code`` (the service maps codes to statuses, the client back to classes)."""
    out: dict[str, type[PromptShrinkError]] = {}
    todo: list[type[PromptShrinkError]] = [PromptShrinkError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == __name__:
            out.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return out
