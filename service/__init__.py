"""promptshrink REST service: compression endpoints and an OpenAI-compatible compressing proxy."""

from .app import create_app
from .config import Settings

__all__ = ["Settings", "create_app"]
