"""The compression endpoints: ``POST /v1/compress`` and ``POST /v1/compress/batch``.

Each request is admitted once (`compression.admit`: allow-lists, library options, the method's class), waits
for its method's warm-up, takes a slot of the work pool and runs inline, micro-batched or on a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from contextlib import closing
from functools import partial
from typing import Any, TypeVar

from fastapi import APIRouter, Request

from promptshrink.errors import PromptShrinkError

from .compression import admit, run
from .deadlines import Callers, unless_disconnected
from .errors import ERROR_RESPONSES, ApiError, busy, from_library, timed_out
from .schemas import BatchRequest, BatchResponse, CompressRequest, CompressResponse

log = logging.getLogger("promptshrink.service")
router = APIRouter()
T = TypeVar("T")


@router.post(
    "/v1/compress", response_model=CompressResponse, response_model_exclude_none=True, responses=ERROR_RESPONSES
)
async def compress(req: CompressRequest, request: Request) -> dict[str, Any]:
    """Compress a text, a list of chat messages, or passages for a question."""
    state = request.app.state.ps
    settings = state.settings
    queued_at = time.perf_counter()
    deadline = queued_at + settings.request_timeout_s
    adm = admit(req, settings)
    await state.wait_loaded(adm.name)
    lease = state.pool.lease(1)  # admission is the same for inline and pooled work
    if lease is None:
        raise busy(settings.retry_after_s, "the compression queue")
    if adm.inline:
        with closing(lease):
            return run(adm, state.metrics, queued_at, deadline)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("compress request: %s", req.model_dump_json()[:2000])
    try:
        if state.batcher is not None and adm.batchable:
            batched = state.batcher.respond(adm, lease, queued_at)
            return await unless_disconnected(request, batched, settings.request_timeout_s)
        waiting = asyncio.get_running_loop().create_future()  # cancelled when this caller goes
        job = partial(run, adm, state.metrics, queued_at, deadline, Callers([waiting]).progress)
        work = state.pool.run(lease, job, light=adm.light)
        return await unless_disconnected(request, _tied(work, waiting), settings.request_timeout_s)
    except TimeoutError as exc:
        raise timed_out() from exc
    finally:
        lease.close()


@router.post(
    "/v1/compress/batch", response_model=BatchResponse, response_model_exclude_none=True, responses=ERROR_RESPONSES
)
async def compress_batch(batch: BatchRequest, request: Request) -> dict[str, Any]:
    """Compress many items concurrently (bounded); each item reports its own result or error."""
    state = request.app.state.ps
    settings, metrics = state.settings, state.metrics
    start = time.perf_counter()
    if len(batch.items) > settings.max_batch_items:
        raise ApiError(413, "too_many_items", f"{len(batch.items)} items; at most {settings.max_batch_items}")
    width = min(len(batch.items), batch.concurrency or state.pool.threads, state.pool.threads)
    lease = state.pool.lease(width)
    if lease is None:
        raise busy(settings.retry_after_s, "the compression queue")
    gate = asyncio.Semaphore(width)

    async def one(req: CompressRequest) -> dict[str, Any]:
        async with gate:
            try:
                adm = admit(req, settings)
                await state.wait_loaded(adm.name)
                job = partial(run, adm, metrics, time.perf_counter(), start + settings.request_timeout_s)
                return {"ok": True, "result": await state.pool.run(lease, job, light=adm.light)}
            except (ApiError, PromptShrinkError) as exc:
                err = exc if isinstance(exc, ApiError) else from_library(exc)
                metrics.errors.labels(err.code).inc()
                return {"ok": False, "status": err.status, "error": err.body()["error"]}

    try:
        items = await asyncio.wait_for(asyncio.gather(*(one(r) for r in batch.items)), settings.request_timeout_s)
    except TimeoutError as exc:
        raise timed_out() from exc
    finally:
        lease.close()
    return {"items": items, "elapsed_s": time.perf_counter() - start}


async def _tied(work: Awaitable[T], waiting: asyncio.Future[None]) -> T:
    """``work``'s result; ``waiting`` is cancelled when this coroutine ends, however it ends (the job's `Callers`
    then see that its caller has gone)."""
    try:
        return await work
    finally:
        waiting.cancel()
