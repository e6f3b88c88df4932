"""Bounded admission: CPU work runs on a fixed thread pool behind a queue of fixed size; beyond it, 503."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Slots:
    """A non-blocking counter of capacity ``limit``; ``take`` fails at once when full (no hidden backlog)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int = 1) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int = 1) -> None:
        with self._lock:
            self.used -= n


class Lease:
    """``n`` slots held until the lease is closed and every job submitted under it has finished."""

    def __init__(self, slots: Slots, n: int) -> None:
        self._slots, self._n = slots, n
        self._pending = 0
        self._closed = False
        self._lock = threading.Lock()

    def track(self, future: Future[object]) -> None:
        with self._lock:
            self._pending += 1
        future.add_done_callback(self._done)

    def _done(self, _: Future[object]) -> None:
        with self._lock:
            self._pending -= 1
            release = self._closed and self._pending == 0
        if release:
            self._slots.give(self._n)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            release = self._pending == 0
        if release:
            self._slots.give(self._n)


class WorkPool:
    """Thread pool for compression; a job that times out keeps its slot until its thread really finishes.

    Model-free work (``light``: tokenizer passes, no LM) runs on threads of its own, so a few long LM jobs holding
    every compression thread cannot make a 20 ms request wait for them.
    """

    def __init__(self, threads: int, max_queue: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="promptshrink")
        light = max(1, threads // 2)
        self.light_executor = ThreadPoolExecutor(max_workers=light, thread_name_prefix="promptshrink-light")
        self.slots = Slots(threads + max_queue)
        self.threads = threads

    def lease(self, n: int = 1) -> Lease | None:
        """``n`` slots, or None when the pool and its queue are full."""
        return Lease(self.slots, n) if self.slots.take(n) else None

    async def run(self, lease: Lease, fn: Callable[[], T], light: bool = False) -> T:
        future = (self.light_executor if light else self.executor).submit(fn)
        lease.track(future)  # type: ignore[arg-type]
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # still queued: never runs; already running: finishes, then frees the slot
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.light_executor.shutdown(wait=False, cancel_futures=True)
