"""Micro-batching: concurrent text requests for the same LM-scored method and budget are compressed together.

The first request of a group waits at most ``batch_wait_ms`` for others (or until the group holds
``batch_max_tokens`` tokens or ``batch_max_items`` requests); the group then runs as one
`promptshrink.pipeline.compress_texts` job on the work pool, so the LM passes of all of them share padded batches on one
model copy per device. Results equal one-by-one compression. If the batch fails, its requests are retried one by
one so that each gets its own result or error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from promptshrink.errors import CompressionTimeoutError
from promptshrink.pipeline import compress_texts
from promptshrink.request import CompressOptions
from promptshrink.result import CompressionResult

from .compression import Admission, from_result, response
from .config import Settings
from .deadlines import Callers
from .limits import Lease, WorkPool
from .metrics import Metrics
from .schemas import TextRequest


@dataclass
class _Pending:
    req: TextRequest
    future: asyncio.Future[CompressionResult]
    queued_at: float


@dataclass
class _Group:
    options: CompressOptions  # the options of the group's first request (all but the question are equal)
    items: list[_Pending] = field(default_factory=list)
    tokens: int = 0
    timer: asyncio.TimerHandle | None = None


class MicroBatcher:
    """Gathers batchable requests whose library options are equal but for the question."""

    def __init__(self, settings: Settings, metrics: Metrics, pool: Callable[[], WorkPool | None]) -> None:
        self.settings, self.metrics, self.pool = settings, metrics, pool
        self.groups: dict[Hashable, _Group] = {}

    async def respond(self, adm: Admission, lease: Lease, queued_at: float) -> dict[str, Any]:
        """The response body of ``adm``, compressed in a batch with the concurrent requests of its group."""
        assert isinstance(adm.req, TextRequest)
        result = await self.submit(adm, lease, queued_at)
        return response(
            from_result("text", result, adm.req.include_segments), adm.name, self.metrics, queued_at, queued_at
        )

    async def submit(self, adm: Admission, lease: Lease, queued_at: float) -> CompressionResult:
        """The request's `CompressionResult`, computed in a batch with the concurrent requests of its group."""
        assert isinstance(adm.req, TextRequest)
        loop = asyncio.get_running_loop()
        key = adm.options.replace(question=None).key()
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(adm.options)
            group.timer = loop.call_later(self.settings.batch_wait_ms / 1000, self._flush, key, lease)
        pending = _Pending(adm.req, loop.create_future(), queued_at)
        group.items.append(pending)
        group.tokens += len(adm.req.text) // 4  # a cheap estimate: the cap only bounds padding and memory
        if group.tokens >= self.settings.batch_max_tokens or len(group.items) >= self.settings.batch_max_items:
            self._flush(key, lease)
        return await pending.future

    def _flush(self, key: Hashable, lease: Lease) -> None:
        group = self.groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        asyncio.get_running_loop().create_task(self._run(group, lease))

    def _left(self, items: list[_Pending]) -> float:
        """Seconds until the last of ``items``' deadlines (their callers stop waiting then); at least 1 ms."""
        deadline = max(i.queued_at for i in items) + self.settings.request_timeout_s
        return max(deadline - time.perf_counter(), 1e-3)

    async def _run(self, group: _Group, lease: Lease) -> None:
        started = time.perf_counter()
        self.metrics.batch_size.observe(len(group.items))
        for item in group.items:
            self.metrics.batch_wait.observe(started - item.queued_at)
        pool = self.pool()
        assert pool is not None
        callers = Callers(i.future for i in group.items)

        def batch(items: list[_Pending], watch: Callers) -> list[CompressionResult]:
            watch.progress()  # all gone while queued: nothing to start
            # stops once every caller has gone (progress), and at the last caller's deadline (timeout_s)
            options = group.options.replace(timeout_s=self._left(items), progress=watch.progress)
            return compress_texts([i.req.text for i in items], options, [i.req.question for i in items])

        try:
            results = await pool.run(lease, lambda: batch(group.items, callers))
        except CompressionTimeoutError as exc:  # every caller timed out or went: nobody to retry for
            for item in group.items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except Exception:  # one bad item must not fail its neighbours: retry them one by one
            for item in group.items:
                if item.future.done():
                    continue
                try:
                    one = Callers([item.future])
                    result = (await pool.run(lease, lambda item=item, one=one: batch([item], one)))[0]
                except Exception as exc:
                    if not item.future.done():
                        item.future.set_exception(exc)
                else:
                    if not item.future.done():
                        item.future.set_result(result)
            return
        for item, result in zip(group.items, results):
            if not item.future.done():
                item.future.set_result(result)
