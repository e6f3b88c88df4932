"""Python clients for the promptshrink service, with the library's `compress*` signatures."""

from .client import AsyncPromptShrinkClient, PromptShrinkClient, ServiceError

__all__ = ["AsyncPromptShrinkClient", "PromptShrinkClient", "ServiceError"]
