"""HTTP errors with a JSON body ``{"error": {"code", "message", ...}}`` and the mapping from library errors."""

from __future__ import annotations

from typing import Any

from promptshrink.errors import PromptShrinkError, library_errors

LIBRARY_STATUS = {code: cls.status for code, cls in library_errors().items()}  # each error class carries its own


class ApiError(Exception):
    """An error the service reports to the caller as it is (never with a stack trace)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def from_library(exc: PromptShrinkError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc))


def busy(retry_after: int, what: str) -> ApiError:
    return ApiError(
        503,
        "overloaded",
        f"{what} is full; retry after {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )
