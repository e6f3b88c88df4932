"""Issue 11 (service side), against real uvicorn servers: no 500s, resource limits, deadlines, start-up, keys."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from promptshrink.service import create_app
from tests.support import ROOT
from tests.support.gate import Gate
from tests.support.models import lm_available
from tests.support.servers import Upstream, announced_url, base_settings, serve
from tests.support.texts import LONG_TEXT


def post(url: str, body: Any, path: str = "/v1/compress", timeout: float = 30, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=timeout, **kwargs)


def metric(url: str, name: str, **headers: str) -> float:
    """The value of one sample line of /metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics", headers=headers).text
    line = next((ln for ln in text.splitlines() if ln.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


# --- 2, 3, 5: bodies that used to answer 500 or burn CPU ------------------------------------------------------


def test_segments_without_a_score_validate(server: str) -> None:
    body = {"text": "Short text. Another one.", "method": "tfidf", "rate": 1, "include_segments": True}
    r = post(server, body)
    assert r.status_code == 200, r.text
    assert r.json()["segments"] == [
        {"text": "Short text. Another one.", "start": 0, "end": 24, "kept": True, "forced": False}
    ]
    batch = post(server, {"items": [body, {"text": LONG_TEXT, "rate": 0.5}]}, "/v1/compress/batch").json()
    assert [i["ok"] for i in batch["items"]] == [True, True]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/compress", b'{"text": "abc \\ud800 def", "method": "tfidf"}'),
        ("/v1/compress", b'{"messages": [{"role": "user", "content": "x \\udfff y"}], "method": "tfidf"}'),
        ("/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}'),
        ("/v1/completions", b'{"model": "m", "prompt": "hi \\ud800", "promptshrink": {"enabled": false}}'),
    ],
)
def test_lone_surrogates_are_refused(server: str, path: str, raw: bytes) -> None:
    """422 on the service's routes; 400 on the proxy's, as OpenAI answers an invalid request."""
    r = httpx.post(f"{server}{path}", content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == (422 if path == "/v1/compress" else 400), r.text
    assert r.json()["error"]["code"] == "invalid_input" and "surrogate" in r.json()["error"]["message"]


def test_keep_abuse_is_refused_at_once(server: str) -> None:
    r = post(server, {"text": "a " * 50_000, "keep": ["a"] * 200, "method": "keep_first", "rate": 0.5})
    assert r.status_code == 422 and "keep" in r.json()["error"]["message"], r.text
    assert metric(server, "promptshrink_queue_slots_used") == 0  # nothing left running after the answer


# --- 6: the method allow-list ---------------------------------------------------------------------------------


def test_methods_outside_the_allow_list_are_422(server: str) -> None:
    r = post(server, {"text": LONG_TEXT, "method": "dspc"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "method_not_allowed"
    assert "keep_first, keep_last, random, tfidf" in r.json()["error"]["message"]
    batch = post(server, {"items": [{"text": LONG_TEXT, "method": "selective_context"}]}, "/v1/compress/batch")
    assert batch.json()["items"][0]["status"] == 422
    chat = {"model": "m", "messages": [{"role": "user", "content": LONG_TEXT}], "promptshrink": {"method": "scope"}}
    proxied = post(server, chat, "/v1/chat/completions")
    assert proxied.status_code == 400 and proxied.json()["error"]["code"] == "method_not_allowed"
    described = httpx.get(f"{server}/v1/methods").json()
    assert described["allowed_methods"] == ["keep_first", "keep_last", "random", "tfidf"]


def test_allow_list_setting_and_start_up_checks(upstream: Upstream) -> None:
    with pytest.raises(ValueError, match="not in PROMPTSHRINK_METHODS"):
        create_app(base_settings(upstream, methods=frozenset({"tfidf"})))  # the default method must be allowed
    with pytest.raises(Exception, match="unknown method"):
        create_app(base_settings(upstream, methods=frozenset({"keep_first", "nope"})))
    for url in serve(base_settings(upstream, methods=frozenset({"keep_first"}))):
        assert httpx.get(f"{url}/readyz").json()["loaded"] == ["keep_first"]  # warm-up loads allowed ones only
        assert post(url, {"text": LONG_TEXT, "method": "tfidf"}).json()["error"]["code"] == "method_not_allowed"
        assert post(url, {"text": LONG_TEXT, "rate": 0.5}).status_code == 200


# --- 7: deadlines free the thread ----------------------------------------------------------------------------


def test_a_timed_out_compression_frees_its_thread(upstream: Upstream, gate: type[Gate]) -> None:
    settings = base_settings(
        upstream,
        methods=frozenset({"keep_first", gate.name}),
        compress_threads=1,
        max_queue=0,
        request_timeout_s=1.0,
        warmup=False,
    )
    for url in serve(settings):
        r = post(url, {"text": LONG_TEXT, "method": gate.name, "rate": 0.5})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        # the gate is never released: only the deadline can stop it; the one thread must come back
        deadline = time.monotonic() + 15
        while metric(url, "promptshrink_queue_slots_used") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(url, "promptshrink_queue_slots_used") == 0
        assert post(url, {"text": LONG_TEXT, "rate": 0.5}).status_code == 200  # 1 thread, no queue: it is free


# --- 12: keys, /metrics and the docs --------------------------------------------------------------------------


def test_metrics_closed_and_docs_open_by_default_when_keys_are_set(auth_server: str) -> None:
    assert httpx.get(f"{auth_server}/metrics").status_code == 401
    assert httpx.get(f"{auth_server}/metrics", headers={"x-api-key": "service-key"}).status_code == 200
    assert httpx.get(f"{auth_server}/openapi.json").status_code == 200
    assert httpx.get(f"{auth_server}/docs").status_code == 200
    odd = post(auth_server, {"text": LONG_TEXT}, headers={"x-api-key": "cl\xe9".encode("latin-1")})
    assert odd.status_code == 401  # a non-ASCII key is a wrong key, not a server error


def test_metrics_and_docs_settings(upstream: Upstream) -> None:
    keys = frozenset({"service-key"})
    for url in serve(base_settings(upstream, api_keys=keys, public_metrics=True, public_docs=False)):
        assert httpx.get(f"{url}/metrics").status_code == 200
        for path in ("/openapi.json", "/docs"):
            assert httpx.get(f"{url}{path}").status_code == 401
            assert httpx.get(f"{url}{path}", headers={"authorization": "Bearer service-key"}).status_code == 200


# --- 1 and 12: a fresh `promptshrink serve` process: requests during start-up, access log ---------------------


@pytest.mark.skipif(not lm_available(), reason="the bundled default LM package is not installed")
def test_requests_during_start_up_and_the_access_log() -> None:
    """POSTs as soon as /healthz answers get 200 or 503 + Retry-After (never 500); a key in the query string
    never reaches the log; the port is chosen by the server (no free-port race)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PROMPTSHRINK_LOAD_WAIT_S": "0.2",
        "PROMPTSHRINK_COMPRESS_THREADS": "2",
    }
    cmd = [sys.executable, "-m", "promptshrink.cli", "serve", "--port", "0", "--method", "selective_context"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    try:
        url = announced_url(proc, log)
        threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.02)
        body = {"text": LONG_TEXT[:600], "rate": 0.5}  # the server's method: selective_context
        with ThreadPoolExecutor(4) as pool:
            early = list(pool.map(lambda _: post(url, body, timeout=120), range(4)))
        assert {r.status_code for r in early} <= {200, 503}, [r.text for r in early]
        for r in early:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "model_loading" and int(r.headers["retry-after"]) >= 1
        deadline = time.monotonic() + 300
        while (ready := httpx.get(f"{url}/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.status_code == 200
        secret = "sk-do-not-log-4242"
        quick = {"text": LONG_TEXT, "rate": 0.5, "method": "keep_first"}
        assert post(url, quick, f"/v1/compress?api_key={secret}&x=1").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = "".join(log)
    assert "/v1/compress?api_key=***&x=***" in text and secret not in text  # every query value is blanked
    assert "Traceback" not in text and " 500" not in text
