"""Helpers for the tests that need a real server: uvicorn on loopback ports, and the stub upstream.

The fixtures built on them (``upstream``, ``server``, ``auth_server``) are in tests/conftest.py. The only fake is
the upstream: a small OpenAI-compatible app that records what it received.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from promptshrink.service import Settings, create_app

UPSTREAM_KEY = "sk-upstream-server"
RAY_REPLICAS = 2  # of the Ray Serve test deployment (tests/service/conftest.py)
STREAM_CHUNKS = ["Hel", "lo", " there", "!"]


def sse_chunks(model: str) -> list[bytes]:
    """The exact bytes the stub upstream streams for a chat completion."""
    events = []
    for i, piece in enumerate(STREAM_CHUNKS):
        delta = {"content": piece} if i else {"role": "assistant", "content": piece}
        chunk = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        events.append(f"data: {json.dumps(chunk)}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


@dataclass
class Upstream:
    """The stub upstream: its URL and every request it received (path, headers, JSON body)."""

    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)

    def last(self) -> dict[str, Any]:
        return self.calls[-1]


# What a real upstream sends with an error and an SDK acts on (a local server cannot produce a 429 with these).
ERROR_HEADERS = {
    "retry-after": "7",
    "x-request-id": "req-stub-1",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "7s",
}


def upstream_app(record: list[dict[str, Any]]) -> FastAPI:
    """Behaviour by model name: fail-<status> answers that status (with ERROR_HEADERS), slow sleeps 1.5 s,
    cookie sets a session cookie, drop breaks a stream off after two events, anything else answers."""
    app = FastAPI()

    async def answer(request: Request, kind: str) -> Response:
        body = await request.json()
        record.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        model = str(body.get("model", ""))
        if model.startswith("fail-"):
            status = int(model[5:])
            error = {"message": f"stub failure {status}", "type": "invalid_request_error", "code": "stub"}
            return JSONResponse({"error": error}, status, headers=ERROR_HEADERS)
        if model == "slow":
            await asyncio.sleep(1.5)
        if body.get("stream"):

            async def events() -> Any:
                for i, chunk in enumerate(sse_chunks(model)):
                    if model == "drop" and i == 2:
                        yield chunk[:10]  # half an event, then the connection dies
                        raise ConnectionResetError("stub upstream dropped the stream")
                    yield chunk

            return StreamingResponse(events(), media_type="text/event-stream")
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": "stub answer"}, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": "stub answer", "finish_reason": "stop", "logprobs": None}
            obj = "text_completion"
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        response = JSONResponse(
            {"id": "stub-1", "object": obj, "created": 1, "model": model, "choices": [choice], "usage": usage}
        )
        if model == "cookie":
            response.set_cookie("session", f"secret-of-{request.headers.get('authorization', 'nobody')}")
        return response

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await answer(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, "text")

    return app


class ServerThread:
    """A real uvicorn server in a background thread, on a loopback socket it binds itself."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 90  # the lifespan imports torch: slow on a loaded machine
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def announced_url(proc: subprocess.Popen[str], log: list[str]) -> str:
    """The URL a `promptshrink serve --port 0` process prints once it has bound a port (so no free-port race);
    the lines read on the way (stdout with stderr merged) are appended to ``log``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        log.append(line)
        found = re.search(r"Uvicorn running on (http://\S+)", line)
        if found:
            return found.group(1)
    raise RuntimeError("the server exited before listening:\n" + "".join(log))


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return
            if r.json().get("status") == "failed":
                raise RuntimeError(f"{url} warm-up failed: {r.json().get('detail')}")
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def serve(settings: Settings) -> Iterator[str]:
    with ServerThread(create_app(settings)) as server:
        wait_ready(server.url)
        yield server.url


def base_settings(upstream: Upstream, **overrides: Any) -> Settings:
    """Fast defaults for tests: keep_first as the server's method, the stub as upstream, a short upstream timeout."""
    values: dict[str, Any] = {
        "method": "keep_first",
        "upstream_base_url": upstream.url,
        "upstream_timeout_s": 1.0,
        "max_body_bytes": 256 * 1024,
        "allowed_options": frozenset({"unit"}),
        "compress_threads": 2,
        "max_queue": 256,
    }
    values.update(overrides)
    return Settings(**values)


# Runs a test on the plain app and on Ray Serve: ``server`` (tests/conftest.py) takes the parameter; the Ray one is
# tests/service/conftest.py's ``ray_server``, skipped when ray is not installed.
plain_and_ray = pytest.mark.parametrize("server", ["plain", "ray"], indirect=True)
