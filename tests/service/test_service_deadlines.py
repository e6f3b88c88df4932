"""No work past its deadline, and no caller starving others (issue 20, item 5), on a real server with real models.

Two large `selective_context` requests time out (504) while a model-free `tfidf` request is answered; once they
have timed out, every compression slot is free again within a few LM windows (the slots are held until the
worker thread really finishes, so ``promptshrink_queue_slots_used`` shows whether work went on past the 504).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

import promptshrink
from promptshrink.errors import CompressionTimeoutError
from promptshrink.service import Settings
from tests.support.servers import serve

TIMEOUT_S = 4.0
SENTENCE = "The committee reviewed budget line {i} and found that spending on item {i} rose by {j} percent. "
BIG = "".join(SENTENCE.format(i=i, j=i % 13) for i in range(2500))  # about 220 K characters: minutes of LM work
SMALL = "".join(SENTENCE.format(i=i, j=i % 7) for i in range(600))  # about 54 K characters, as in the review
CJK = "委员会审查了预算项目并发现支出增加了百分之五。" * 40_000  # about 1 MB of UTF-8


def slots_used(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    return float(re.search(r"^promptshrink_queue_slots_used (\S+)$", metrics, re.M).group(1))


def wait_idle(url: str, seconds: float) -> float:
    """Seconds until no compression slot is held (or ``seconds``, if it never happens)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if slots_used(url) == 0:
            return time.monotonic() - start
        time.sleep(0.1)
    return seconds


@pytest.fixture(scope="module")
def lm_server() -> Iterator[str]:
    settings = Settings(
        method="selective_context",
        methods=frozenset({"selective_context", "tfidf", "distilled"}),
        request_timeout_s=TIMEOUT_S,
        compress_threads=2,
        max_queue=16,
        max_body_bytes=4 << 20,
    )
    yield from serve(settings)


def post(url: str, body: dict, out: list, key: str) -> None:
    start = time.monotonic()
    r = httpx.post(f"{url}/v1/compress", json=body, timeout=120)
    out.append((key, r.status_code, time.monotonic() - start))


def test_big_lm_requests_time_out_stop_and_do_not_starve_a_small_one(lm_server: str) -> None:
    results: list = []
    big = [
        threading.Thread(target=post, args=(lm_server, {"text": BIG + str(k), "rate": 0.5}, results, "big"))
        for k in range(2)
    ]
    for thread in big:
        thread.start()
        time.sleep(0.05)  # two jobs, not one batch: both compression threads are busy
    time.sleep(1.0)
    post(lm_server, {"text": SMALL, "method": "tfidf", "rate": 0.5}, results, "small")
    for thread in big:
        thread.join()
    statuses = {(key, status) for key, status, _ in results}
    assert statuses == {("small", 200), ("big", 504)}, results
    assert wait_idle(lm_server, 20) < 15, "LM work went on long after its callers got 504"


@pytest.fixture(scope="module")
def patient_server() -> Iterator[str]:
    """A long request timeout: only the callers' disconnects can stop the work early."""
    yield from serve(Settings(method="selective_context", request_timeout_s=600, compress_threads=2, max_queue=16))


def test_batched_requests_stop_when_their_callers_disconnect(patient_server: str) -> None:
    """Three callers of one batch close their connections after 1 s: the batch (many minutes of LM windows) stops
    at its next window instead of running to its 600 s deadline."""
    bodies = [{"text": BIG + str(k), "rate": 0.5} for k in range(3)]

    def gone(body: dict) -> None:
        with contextlib.suppress(httpx.TimeoutException):
            httpx.post(f"{patient_server}/v1/compress", json=body, timeout=1.0)

    threads = [threading.Thread(target=gone, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()  # within batch_wait_ms of each other: one batch
    for thread in threads:
        thread.join()
    assert slots_used(patient_server) > 0
    assert wait_idle(patient_server, 90) < 60, "the batch ran on after every caller went"


def test_distilled_on_a_megabyte_of_cjk_stops_near_its_deadline() -> None:
    start = time.monotonic()
    with pytest.raises(CompressionTimeoutError):
        promptshrink.compress(CJK, "distilled", rate=0.5, timeout_s=2.0)
    assert time.monotonic() - start < 20  # tokenizing 1 MB comes before the first window; the old code ran on


def test_distilled_over_http_frees_its_slot_after_the_504(lm_server: str) -> None:
    r = httpx.post(f"{lm_server}/v1/compress", json={"text": CJK, "method": "distilled", "rate": 0.5}, timeout=120)
    assert r.status_code == 504
    assert wait_idle(lm_server, 20) < 15
