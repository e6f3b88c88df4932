"""Work stops when nobody waits for it: the callers of a job, and racing a request against its client's disconnect.

A compression job (one request, or a micro-batch of several) holds a `Callers` over the futures its callers
await; a caller that times out or disconnects cancels its future. The job's progress callback (called between
the windows and stages of every method, see `CompressionRequest.report`) raises `CompressionTimeoutError` once
every caller has gone, so the thread and its CPU are freed at the next window instead of finishing work whose
answer nobody reads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from fastapi import Request

from promptshrink.errors import CompressionTimeoutError

from .errors import ApiError

T = TypeVar("T")


class Callers:
    """The callers waiting on ``futures``; `progress` stops the job once all of them are done or cancelled."""

    def __init__(self, futures: Iterable[asyncio.Future[Any]]) -> None:
        futures = list(futures)
        self._live = len(futures)
        self._lock = threading.Lock()
        self.gone = threading.Event()
        if not futures:
            self.gone.set()
        for future in futures:
            future.add_done_callback(self._leave)

    def _leave(self, _: asyncio.Future[Any]) -> None:
        with self._lock:
            self._live -= 1
            if self._live <= 0:
                self.gone.set()

    def progress(self, done: int = 0, total: int = 0) -> None:
        """A progress callback for the job's requests: raises once every caller has gone (runs on the worker)."""
        if self.gone.is_set():
            raise CompressionTimeoutError(f"stopped after {done} of {total} steps: every caller has gone")


async def until_disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read: uvicorn's ``receive`` then waits
    for the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T], timeout_s: float) -> T:
    """``work``'s result; cancelled (a `TimeoutError`) after ``timeout_s``, or (a 499 nobody reads) when the client
    disconnects first. Cancelling ``work`` cancels the futures its `Callers` watch."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself was cancelled
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    if watch in done:
        raise ApiError(499, "client_disconnected", "the client closed the connection before the answer")
    raise TimeoutError
