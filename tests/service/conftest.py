"""Fixtures of the service tests: the real upstreams of the proxy tests, and one local Ray instance with the
service deployed on Ray Serve (started at the first test that needs it, shut down after the last one here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import RAY_REPLICAS, Upstream, base_settings
from tests.support.upstreams import AnthropicUpstream, RealUpstream, free_port, litellm_proxy, transformers_serve


@pytest.fixture(scope="session")
def real_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealUpstream]:
    """`transformers serve` on the bundled SmolLM2, shared by the session (about 25 s to start)."""
    with transformers_serve(Path(tmp_path_factory.mktemp("transformers-serve"))) as served:
        yield served


@pytest.fixture(scope="session")
def anthropic_upstream(
    real_upstream: RealUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AnthropicUpstream]:
    """A LiteLLM proxy (Anthropic Messages) in front of ``real_upstream``, shared by the session."""
    with litellm_proxy(real_upstream, Path(tmp_path_factory.mktemp("litellm"))) as proxy:
        yield proxy


@pytest.fixture(scope="package")
def ray_local() -> Iterator[None]:
    """One local Ray instance for the service tests: 2 CPUs and one GPU as Ray sees it (on a machine without CUDA,
    an actor given a share of it is placed, and torch there sees no CUDA device), no dashboard; skipped when ray is
    not installed."""
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from promptshrink.service.ray_app import PROXY_CALLBACK, PROXY_CALLBACK_VARIABLE

    previous = os.environ.get(PROXY_CALLBACK_VARIABLE)
    os.environ[PROXY_CALLBACK_VARIABLE] = PROXY_CALLBACK  # as `serve --ray` does: JSON errors from Ray's proxy
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
        if previous is None:
            os.environ.pop(PROXY_CALLBACK_VARIABLE)
        else:
            os.environ[PROXY_CALLBACK_VARIABLE] = previous


@pytest.fixture(scope="package")
def ray_server(ray_local: None, upstream: Upstream) -> str:
    """The service on Ray Serve, as `promptshrink serve --ray` deploys it: two replicas of half a CPU each, the
    plain test server's settings."""
    from ray import serve

    from promptshrink.service.ray_app import DEPLOYMENT, build

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = base_settings(upstream, ray_replicas=RAY_REPLICAS, ray_cpus_per_replica=0.5)
    serve.run(build(settings), name=DEPLOYMENT, route_prefix="/")
    return f"http://127.0.0.1:{port}"
