"""A real Anthropic Messages upstream for the proxy tests: a LiteLLM proxy (PyPI ``litellm[proxy]``) in front of
`transformers serve` (tests/real_upstream.py).

LiteLLM translates ``POST /v1/messages`` into an OpenAI ``/v1/chat/completions`` call to the local server and
its answer (and stream) back into Anthropic's format. Test modules load it with
``pytest_plugins = ["tests.real_upstream", "tests.real_anthropic_upstream"]``; one proxy serves the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.real_upstream import RealUpstream, _free_port

START_TIMEOUT_S = 180
MODEL = "smollm2"  # the name callers use; LiteLLM maps it to the local server's model


@dataclass(frozen=True)
class AnthropicUpstream:
    """Base URL (no ``/v1``, as the anthropic SDK wants it) and the model name it serves."""

    url: str
    model: str


@pytest.fixture(scope="session")
def anthropic_upstream(
    real_upstream: RealUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnthropicUpstream]:
    litellm = shutil.which("litellm")
    if litellm is None:
        pytest.skip("litellm[proxy] not installed (dev extra)")
    folder = Path(tmp_path_factory.mktemp("litellm"))
    config = folder / "config.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: hosted_vllm/{real_upstream.model}\n"
        f"      api_base: {real_upstream.url}\n"
        "      api_key: none\n"
    )
    port = _free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOG": "ERROR",
        "NO_DOCS": "True",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    log_path = folder / "litellm.log"
    with open(log_path, "wb") as log:
        command = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"litellm exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"litellm not up after {START_TIMEOUT_S}s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield AnthropicUpstream(f"http://127.0.0.1:{port}", MODEL)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
