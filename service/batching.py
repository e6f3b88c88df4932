"""Micro-batching: concurrent text requests for the same LM-scored method and budget are compressed together.

The first request of a group waits at most ``batch_wait_ms`` for others (or until the group holds
``batch_max_tokens`` tokens or ``batch_max_items`` requests); the group then runs as one
`promptshrink.compress_batch` job on the work pool, so the LM passes of all of them share padded batches on one
model copy per device. Results equal one-by-one compression. If the batch fails, its requests are retried one by
one so that each gets its own result or error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import promptshrink
from promptshrink.result import CompressionResult

from .compression import text_response
from .config import Settings
from .limits import Lease, WorkPool
from .metrics import Metrics
from .schemas import CompressRequest, TextRequest


@dataclass
class _Pending:
    req: TextRequest
    future: asyncio.Future[CompressionResult]
    queued_at: float


@dataclass
class _Group:
    method: str
    options: dict[str, Any]
    items: list[_Pending] = field(default_factory=list)
    tokens: int = 0
    timer: asyncio.TimerHandle | None = None


def batchable(req: CompressRequest, method: str) -> bool:
    """Text requests for a method whose LM passes batch (it declares `Compressor.batches`)."""
    return isinstance(req, TextRequest) and promptshrink.registry.get_method(method).batches


class MicroBatcher:
    """Gathers batchable requests by (method, options, budget, tokenizer, keep, protect_numbers, seed)."""

    def __init__(self, settings: Settings, metrics: Metrics, pool: Callable[[], WorkPool | None]) -> None:
        self.settings, self.metrics, self.pool = settings, metrics, pool
        self.groups: dict[Hashable, _Group] = {}

    async def respond(
        self, req: TextRequest, method: str, options: dict[str, Any], lease: Lease, queued_at: float
    ) -> dict[str, Any]:
        """The response body of ``req``, compressed in a batch with the concurrent requests of its group."""
        result = await self.submit(req, method, options, lease)
        return text_response(result, req, method, self.metrics, queued_at, queued_at)

    async def submit(self, req: TextRequest, method: str, options: dict[str, Any], lease: Lease) -> CompressionResult:
        """The request's `CompressionResult`, computed in a batch with the concurrent requests of its group."""
        loop = asyncio.get_running_loop()
        key = (
            method,
            tuple(sorted(options.items())),
            req.rate,
            req.target_tokens,
            req.tokenizer,
            tuple(req.keep),
            req.protect_numbers,
            req.seed,
        )
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(method, options)
            group.timer = loop.call_later(self.settings.batch_wait_ms / 1000, self._flush, key, lease)
        pending = _Pending(req, loop.create_future(), time.perf_counter())
        group.items.append(pending)
        group.tokens += len(req.text) // 4  # a cheap estimate: the cap only bounds padding and memory
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

    async def _run(self, group: _Group, lease: Lease) -> None:
        started = time.perf_counter()
        self.metrics.batch_size.observe(len(group.items))
        for item in group.items:
            self.metrics.batch_wait.observe(started - item.queued_at)
        pool = self.pool()
        assert pool is not None
        first = group.items[0].req
        common = {
            "rate": first.rate,
            "target_tokens": first.target_tokens,
            "tokenizer": first.tokenizer,
            "keep": first.keep,
            "protect_numbers": first.protect_numbers,
            "seed": first.seed,
            "device": self.settings.device,
        }

        def batch() -> list[CompressionResult]:
            texts = [i.req.text for i in group.items]
            questions = [i.req.question for i in group.items]
            return promptshrink.compress_batch(texts, group.method, questions=questions, **common, **group.options)

        try:
            results = await pool.run(lease, batch)
        except Exception:  # one bad item must not fail its neighbours: retry them one by one
            for item in group.items:
                await self._one(item, group, common, pool, lease)
            return
        for item, result in zip(group.items, results):
            if not item.future.done():
                item.future.set_result(result)

    async def _one(self, item: _Pending, group: _Group, common: dict[str, Any], pool: WorkPool, lease: Lease) -> None:
        def one() -> CompressionResult:
            return promptshrink.compress(
                item.req.text, group.method, question=item.req.question, **common, **group.options
            )

        try:
            result = await pool.run(lease, one)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(result)
