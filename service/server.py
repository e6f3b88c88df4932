"""Process entry point used by `promptshrink serve`: settings from flags and environment, then uvicorn."""

from __future__ import annotations

import logging
import os

import uvicorn

from .app import create_app
from .config import Settings
from .proxy import check_upstream_key
from .timeouts import configure, uvicorn_options


def app_from_env() -> object:
    """uvicorn factory for worker processes (settings travel in the environment)."""
    settings = Settings.from_env()
    configure(settings)
    return create_app(settings)


def run(
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    method: str | None = None,
    log_level: str | None = None,
) -> None:
    """Serve until interrupted; arguments left None come from ``PROMPTSHRINK_*`` variables or defaults."""
    settings = Settings.from_env(host=host, port=port, workers=workers, method=method, log_level=log_level)
    os.environ.update(settings.to_env())
    level = settings.log_level.lower()
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers > 1:
        check_upstream_key(settings)  # refuse here, not in every worker (create_app checks in-process)
        uvicorn.run(
            "promptshrink.service.server:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=level,
            **uvicorn_options(settings),
        )
    else:
        app = create_app(settings)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=level, **uvicorn_options(settings))
