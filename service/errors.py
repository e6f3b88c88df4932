"""HTTP errors with a JSON body and the mapping from library errors.

The service's own routes answer ``{"error": {"code", "message", ...}}``; the proxy routes answer in their API's
shape (`error_body`), so an SDK pointed at the proxy raises the same exception, with the message, for the
proxy's own errors as for the upstream's: OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (the
service's code as ``code``) and Anthropic's ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from promptshrink.errors import PromptShrinkError, library_errors

LIBRARY_STATUS = {code: cls.status for code, cls in library_errors().items()}  # each error class carries its own
ANTHROPIC_ROUTES = ("/v1/messages",)
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/v1/embeddings")
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
OVERLOADED = ("overloaded", "model_loading")  # codes of a 503 that is the service's load, not an outage


def _under(path: str, routes: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in routes)


def api_status(path: str, status: int) -> int:
    """The status to answer at ``path``: on the proxy routes a request the proxy refuses as invalid (422 on the
    service's own routes) is a 400, as OpenAI and Anthropic answer it, so their SDKs raise `BadRequestError`."""
    return 400 if status == 422 and _under(path, ANTHROPIC_ROUTES + OPENAI_ROUTES) else status


def error_body(path: str, status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON body of an error at ``path`` in the shape of the API served there (module docstring)."""
    extra = extra or {}
    if _under(path, ANTHROPIC_ROUTES):
        kind = "overloaded_error" if code in OVERLOADED else ANTHROPIC_TYPES.get(status)
        kind = kind or ("invalid_request_error" if status < 500 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if _under(path, OPENAI_ROUTES):
        kind = OPENAI_TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")
        param = extra.pop("param", None)
        return {"error": {"message": message, "type": kind, "param": param, "code": code, **extra}}
    return {"error": {"code": code, "message": message, **extra}}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 413, 422, 503, 504)}
PROXY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, 502: {"model": ErrorBody}}


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

    def status_at(self, path: str) -> int:
        """The status answered at ``path`` (`api_status`)."""
        return api_status(path, self.status)

    def body(self, path: str = "") -> dict[str, Any]:
        """The JSON body at ``path`` (the route's API shape, `error_body`)."""
        return error_body(path, self.status_at(path), self.code, self.message, dict(self.extra))


def from_library(exc: PromptShrinkError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc))


def busy(retry_after: int, what: str) -> ApiError:
    return ApiError(
        503,
        "overloaded",
        f"{what} is full; retry after {retry_after}s",
        headers={"Retry-After": str(retry_after)},
    )


def timed_out() -> ApiError:
    return ApiError(504, "timeout", "compression took longer than the server's request timeout")
