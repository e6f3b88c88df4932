"""A real Anthropic Messages upstream for the proxy tests: a LiteLLM proxy (PyPI ``litellm[proxy]``) in front of
`transformers serve` (tests/real_upstream.py).

LiteLLM translates ``POST /v1/messages`` into an OpenAI ``/v1/chat/completions`` call to the local server and
its answer (and stream) back into Anthropic's format. Test modules load it with
``pytest_plugins = ["tests.real_upstream", "tests.real_anthropic_upstream"]``; one proxy serves the session.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real_upstream import RealUpstream, _free_port, running

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
    command = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    with running("litellm", command, env, f"http://127.0.0.1:{port}/health/liveliness", folder / "litellm.log"):
        yield AnthropicUpstream(f"http://127.0.0.1:{port}", MODEL)
