"""Regression tests of the fault and abuse review (issue 20, items 6, 8, 9, 10, 11, 12), over real HTTP.

Slow senders are raw sockets against a real uvicorn server; the upstreams are a recording app and a raw socket
server that frames its answer by closing the connection (HTTP/1.0 style), which the uvicorn stub cannot do.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from promptshrink.service import Settings, create_app
from promptshrink.service.middleware import scrub_query
from promptshrink.service.sse import EventBuffer
from promptshrink.service.timeouts import uvicorn_options
from tests.support.servers import ServerThread, Upstream, announced_url, base_settings, serve
from tests.support.texts import LONG_TEXT

MESSAGES = [{"role": "user", "content": LONG_TEXT}, {"role": "user", "content": "Which region grew?"}]


# --- 6: slow senders ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_timeouts(upstream: Upstream) -> Iterator[str]:
    settings = base_settings(upstream, header_timeout_s=1.0, body_timeout_s=1.5, keep_alive_s=1)
    with ServerThread(create_app(settings), **uvicorn_options(settings)) as server:
        yield server.url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Read (and send ``trickle`` one byte every 0.2 s) until the server closes the connection or ``seconds`` pass;
    returns whether it closed and what it answered."""
    got = b""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
            if not data:
                return True, got
            got += data
        except TimeoutError:
            pass
        except OSError:
            return True, got
        if trickle:
            try:
                sock.send(trickle[sent % len(trickle) : sent % len(trickle) + 1])
            except OSError:
                return True, got
            sent += 1
    return False, got


def test_slow_headers_slow_body_and_idle_connections_are_dropped(short_timeouts: str) -> None:
    """Every kind of slow sender is closed a little after its timeout; a request sent in time still works."""
    idle = _connect(short_timeouts)
    closed, _ = _closed_within(idle, 4)
    assert closed, "an idle connection stayed open past the header timeout"

    slow_header = _connect(short_timeouts)
    slow_header.send(b"POST /v1/compress HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed, got = _closed_within(slow_header, 4, trickle=b"X-Slow: a")
    assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]

    slow_body = _connect(short_timeouts)
    head = b"POST /v1/compress HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    slow_body.send(head + b"content-length: 100000\r\n\r\n")
    started = time.monotonic()
    closed, got = _closed_within(slow_body, 5, trickle=b'{"text": "')
    assert closed and got.startswith(b"HTTP/1.1 408") and b"body" in got, got[:200]
    assert time.monotonic() - started < 4

    keep_alive = _connect(short_timeouts)
    keep_alive.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    closed, got = _closed_within(keep_alive, 4)
    assert closed and got.startswith(b"HTTP/1.1 200"), "an idle keep-alive connection stayed open"
    r = httpx.post(f"{short_timeouts}/v1/compress", json={"text": LONG_TEXT, "rate": 0.5})
    assert r.status_code == 200


def test_promptshrink_serve_drops_slow_senders(tmp_path: Path) -> None:
    """The same through the real `promptshrink serve` command, its timeouts set by environment variables."""
    env = {**os.environ, "PROMPTSHRINK_HEADER_TIMEOUT_S": "1", "PROMPTSHRINK_BODY_TIMEOUT_S": "1.5"}
    cmd = [sys.executable, "-m", "promptshrink.cli", "serve", "--port", "0", "--method", "keep_first"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        url = announced_url(proc, [])
        slow_header = _connect(url)
        slow_header.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed, got = _closed_within(slow_header, 6, trickle=b"X-Slow: a")
        assert closed and got.startswith(b"HTTP/1.1 408"), got[:200]
        idle = _connect(url)
        assert _closed_within(idle, 6)[0], "an idle connection stayed open past the header timeout"
    finally:
        proc.terminate()
        proc.wait(30)


# --- 8 and 11: the SSE relay --------------------------------------------------------------------------------------


class RawUpstream:
    """A socket server that answers every request with ``response`` (bytes) and then closes the connection."""

    def __init__(self, response: bytes, pieces: int = 1) -> None:
        self.response, self.pieces = response, pieces
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(next(v for k, v in _headers(head) if k == b"content-length"))
                while len(body) < length:
                    body += conn.recv(65536)
                step = max(1, len(self.response) // self.pieces)
                for i in range(0, len(self.response), step):
                    conn.sendall(self.response[i : i + step])


def _headers(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, v in (line.split(b":", 1) for line in lines)]


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def _proxy(upstream_url: str) -> Iterator[str]:
    yield from serve(Settings(method="keep_first", upstream_base_url=upstream_url, proxy_compress=False))


def _stream(url: str) -> bytes:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        return r.read()


def test_a_partial_event_at_connection_close_is_dropped_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    events = b'data: {"n": 1}\n\ndata: {"n": 2}\n\n'
    upstream = RawUpstream(SSE_HEAD + events + b'data: {"n": 3, "trunc', pieces=3)
    with caplog.at_level(logging.WARNING, logger="promptshrink.service"):
        for url in _proxy(upstream.url):
            raw = _stream(url)
            metrics = httpx.get(f"{url}/metrics").text
    assert raw.startswith(events) and b"trunc" not in raw
    error = json.loads(raw[len(events) :].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_stream_broken" and raw.endswith(b"\n\n")
    assert 'promptshrink_errors_total{code="upstream_stream_broken"} 1.0' in metrics
    assert any(r.getMessage().startswith("upstream stream broke off") for r in caplog.records)


def test_a_complete_stream_framed_by_connection_close_is_relayed_unchanged() -> None:
    events = b"".join(b'data: {"n": %d}\n\n' % i for i in range(50)) + b"data: [DONE]\n\n"
    for url in _proxy(RawUpstream(SSE_HEAD + events, pieces=7).url):
        assert _stream(url) == events


def test_one_large_event_is_relayed_whole() -> None:
    event = b"data: " + b"x" * (24 << 20) + b"\n\n"
    for url in _proxy(RawUpstream(SSE_HEAD + event, pieces=2000).url):
        got = _stream(url)
    same = got == event  # not in the assert: pytest would diff 24 MB
    assert same, (len(got), got[:80], got[-80:])


def _relay_seconds(size: int, chunk: int = 65536) -> float:
    data = b"data: " + b"y" * size
    best = float("inf")
    for _ in range(5):
        buffer = EventBuffer()
        start = time.process_time()
        for i in range(0, len(data), chunk):
            assert buffer.feed(data[i : i + chunk]) == b""
        assert buffer.feed(b"\n\n") == data + b"\n\n"
        best = min(best, time.process_time() - start)
    return best


def test_relay_buffer_work_grows_linearly_with_the_event() -> None:
    """8x the event size costs about 8x the time (the old buffer concatenation and rescans: about 64x)."""
    small, large = _relay_seconds(4 << 20), _relay_seconds(32 << 20)
    assert large / small < 24, (small, large)


# --- 9: a service key never leaves the server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(upstream: Upstream) -> Iterator[str]:
    settings = base_settings(upstream, api_keys=frozenset({"svc-key-AAAA1111"}), upstream_api_key="sk-upstream")
    yield from serve(settings)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "svc-key-AAAA1111", "authorization": "Bearer svc-key-AAAA1111"},
        {"authorization": "Bearer svc-key-AAAA1111"},
        {"x-api-key": "svc-key-AAAA1111"},
    ],
)
def test_a_service_key_is_never_forwarded_upstream(keyed_server: str, upstream: Upstream, headers: dict) -> None:
    before = len(upstream.calls)
    r = httpx.post(
        f"{keyed_server}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}, headers=headers
    )
    assert r.status_code == 200 and len(upstream.calls) == before + 1
    sent = upstream.last()["headers"]
    assert sent["authorization"] == "Bearer sk-upstream"
    assert "svc-key-AAAA1111" not in json.dumps(sent)


def test_a_callers_own_upstream_key_is_forwarded(keyed_server: str, upstream: Upstream) -> None:
    headers = {"x-api-key": "svc-key-AAAA1111", "authorization": "Bearer sk-callers-own"}
    r = httpx.post(
        f"{keyed_server}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}, headers=headers
    )
    assert r.status_code == 200 and upstream.last()["headers"]["authorization"] == "Bearer sk-callers-own"


# --- 12: access log, log level, Host allow-list, strict types, media type -----------------------------------------


@pytest.mark.parametrize("name", ["api_key", "jwt", "session", "code", "k%65y", "apikey", "x"])
def test_every_query_value_is_scrubbed(name: str) -> None:
    for sep in ("?", "?a=1&", "?a=1;"):
        line = scrub_query(f"/v1/compress{sep}{name}=s3cr3t-value HTTP/1.1")
        assert "s3cr3t" not in line and line.endswith(f"{name}=*** HTTP/1.1")
    assert scrub_query("/v1/compress?s3cr3t") == "/v1/compress?***"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_access_log_holds_no_query_value(server: str) -> None:
    access, handler = logging.getLogger("uvicorn.access"), Lines()
    level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        httpx.get(f"{server}/healthz?jwt=eyJ-secret&k%65y=other-secret;apikey=third-secret&session=4th-secret")
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert any("/healthz?jwt=***&k%65y=***;apikey=***&session=***" in line for line in handler.lines), handler.lines
    assert not any("secret" in line for line in handler.lines)


def test_log_level_comes_from_the_environment_when_the_flag_is_not_given() -> None:
    code = (
        "import sys; import promptshrink.service.server as s; "
        "s.uvicorn.run = lambda *a, **k: print('LEVEL', k['log_level']); "
        "from promptshrink.cli import main; sys.argv = ['promptshrink', 'serve', '--method', 'keep_first']; main()"
    )
    for env, want in (({"PROMPTSHRINK_LOG_LEVEL": "warning"}, "warning"), ({}, "info")):
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTSHRINK_")} | env
        out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120)
        assert f"LEVEL {want}" in out.stdout, out.stderr[-2000:]


def test_host_allow_list(upstream: Upstream) -> None:
    for url in serve(base_settings(upstream)):  # bound to loopback: loopback names only
        port = url.rsplit(":", 1)[1]
        for host, status in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), ("[::1]", 200)):
            assert httpx.get(f"{url}/healthz", headers={"host": host}).status_code == status
        r = httpx.get(f"{url}/healthz", headers={"host": f"rebound.attacker.example:{port}"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
    listed = frozenset({"127.0.0.1", "api.example.com", "*.corp.example"})
    for url in serve(base_settings(upstream, allowed_hosts=listed)):
        for host, status in (("api.example.com", 200), ("a.corp.example:1", 200), ("localhost", 400), ("corp.x", 400)):
            assert httpx.get(f"{url}/healthz", headers={"host": host}).status_code == status, host
    for url in serve(base_settings(upstream, host="0.0.0.0")):  # bound to every interface and no list: any
        assert httpx.get(f"{url}/healthz", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"target_tokens": True}, "target_tokens", "valid integer"),
        ({"target_tokens": "1"}, "target_tokens", "valid integer"),
        ({"rate": "0.5"}, "rate", "valid number"),
        ({"rate": True}, "rate", "valid number"),
        ({"seed": "1"}, "seed", "valid integer"),
    ],
)
def test_numbers_are_strict(server: str, body: dict, field: str, message: str) -> None:
    r = httpx.post(f"{server}/v1/compress", json={"text": LONG_TEXT, **body})
    assert r.status_code == 422 and field in r.json()["error"]["message"] and message in r.json()["error"]["message"]


def test_a_nan_rate_is_not_a_number(server: str) -> None:
    raw = '{"text": "A sentence here. Another one there.", "rate": NaN}'
    r = httpx.post(f"{server}/v1/compress", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite number" in r.json()["error"]["message"]


def test_proxy_policy_headers_are_still_numbers(server: str, upstream: Upstream) -> None:
    body = {"model": "gpt-4o", "prompt": LONG_TEXT}
    r = httpx.post(f"{server}/v1/completions", json=body, headers={"x-promptshrink-target-tokens": "60"})
    assert r.status_code == 200 and 0 < int(r.headers["x-promptshrink-compressed-tokens"]) <= 60
    r = httpx.post(f"{server}/v1/completions", json=body, headers={"x-promptshrink-rate": "0.5"})
    assert r.status_code == 200 and int(r.headers["x-promptshrink-tokens-saved"]) > 0
    r = httpx.post(
        f"{server}/v1/completions",
        json={"model": "gpt-4o", "prompt": LONG_TEXT},
        headers={"x-promptshrink-rate": "nan"},
    )
    assert r.status_code == 400 and "rate" in r.json()["error"]["message"]  # 400 on the proxy, as OpenAI answers


def test_a_body_that_is_not_json_is_415(server: str) -> None:
    for path in ("/v1/compress", "/v1/chat/completions"):
        r = httpx.post(
            f"{server}{path}", content=json.dumps({"text": LONG_TEXT}), headers={"content-type": "text/plain"}
        )
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(f"{server}/v1/compress", content=json.dumps({"text": LONG_TEXT, "rate": 0.5}))  # untyped
    assert r.status_code == 415
    r = httpx.post(f"{server}/v1/compress", json={"text": LONG_TEXT, "rate": 0.5})
    assert r.status_code == 200


# --- 10: nesting depth --------------------------------------------------------------------------------------------


def _nest(n: int) -> str:
    return "[" * n + "1" + "]" * n


def _depth_bodies(n: int) -> dict[str, tuple[str, str]]:
    text = json.dumps(LONG_TEXT)
    return {
        "message field": (
            "/v1/compress",
            f'{{"messages": [{{"role": "user", "content": {text}, "x": {_nest(n)}}}, '
            '{"role": "user", "content": "Which region?"}], "rate": 0.5}',
        ),
        "content part": (
            "/v1/compress",
            f'{{"messages": [{{"role": "user", "content": [{{"type": "text", "text": {text}, "x": {_nest(n)}}}]}}, '
            '{"role": "user", "content": "Which region?"}], "rate": 0.5}',
        ),
        "passage metadata": (
            "/v1/compress",
            f'{{"passages": [{{"text": {text}, "metadata": {{"a": {_nest(n)}}}}}], "question": "Which?", "rate": 0.5}}',
        ),
        "proxy chat body": (
            "/v1/chat/completions",
            f'{{"model": "gpt-4o", "messages": [{{"role": "user", "content": {text}, "x": {_nest(n)}}}]}}',
        ),
    }


@pytest.mark.parametrize("depth", [256, 600, 5000, 300_000])
def test_deep_json_is_a_4xx_not_500(server: str, depth: int) -> None:
    """422 ``too_deep`` on the service's routes, 400 on the proxy's (as OpenAI answers), 413 past the size cap."""
    for where, (path, body) in _depth_bodies(depth).items():
        r = httpx.post(f"{server}{path}", content=body, headers={"content-type": "application/json"})
        invalid = 400 if path.startswith("/v1/chat") else 422
        assert r.status_code in (413, invalid), (where, r.status_code, r.text[:300])
        if r.status_code == invalid:
            assert r.json()["error"]["code"] == "too_deep" and "64 levels" in r.json()["error"]["message"], where


def test_json_nested_within_the_limit_goes_through(server: str, upstream: Upstream) -> None:
    for where, (path, body) in _depth_bodies(58).items():
        r = httpx.post(f"{server}{path}", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, (where, r.text[:300])
    r = httpx.post(
        f"{server}/v1/compress", json={"passages": [{"text": LONG_TEXT, "metadata": {"a": json.loads(_nest(58))}}]}
    )
    assert r.json()["passages"][0]["metadata"] == {"a": json.loads(_nest(58))}
    brackets = '[[[{{{"\\"[[[' * 200  # brackets and escaped quotes inside a string do not nest
    r = httpx.post(f"{server}/v1/compress", json={"text": LONG_TEXT + brackets, "rate": 0.5})
    assert r.status_code == 200


# --- the proxy's schema: generated bodies reach the upstream ------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_schema_generated_proxy_bodies_reach_the_upstream(server: str, path: str) -> None:
    """Positive cases from the served schema (derandomized): never a server error, and many are relayed answers
    (before the bodies were described, the schema said only "object" and none of them was)."""
    api = schemathesis.openapi.from_url(f"{server}/openapi.json")
    statuses: dict[int, int] = {}

    @given(case=api[path]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def call(case: schemathesis.Case) -> None:
        response = case.call(timeout=20)
        assert response.status_code < 500 or response.status_code in (502, 504), response.text
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    call()
    assert statuses.get(200, 0) >= sum(statuses.values()) // 4, statuses
