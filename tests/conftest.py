"""Fixtures shared by every folder: real text, the stub upstream, real test servers over HTTP, the gate method;
and offline settings for every test. Helpers that are not fixtures are in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import DATA

if TYPE_CHECKING:
    from tests.support.gate import Gate
    from tests.support.servers import Upstream

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def article() -> str:
    """A real 3,080-word English article: the 1986 State of the Union address (public domain)."""
    return (DATA / "article.txt").read_text()


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """The stub OpenAI-compatible upstream (tests/support/servers.py), recording every request it receives."""
    from tests.support.servers import ServerThread, Upstream, upstream_app

    calls: list[dict[str, Any]] = []
    with ServerThread(upstream_app(calls)) as stub:
        yield Upstream(f"{stub.url}/v1", calls)


@pytest.fixture(scope="session")
def plain_server(upstream: Upstream) -> Iterator[str]:
    """The main test server (no auth): the app under uvicorn, ``base_settings`` in front of the stub upstream."""
    from tests.support.servers import base_settings, serve

    yield from serve(base_settings(upstream))


@pytest.fixture
def server(request: pytest.FixtureRequest, plain_server: str) -> str:
    """The main test server's URL: ``plain_server``, or with ``@plain_and_ray`` (tests/support/servers.py) also the
    same settings on Ray Serve (``ray_server``, tests/service/conftest.py)."""
    kind = getattr(request, "param", "plain")
    return plain_server if kind == "plain" else request.getfixturevalue(f"{kind}_server")


@pytest.fixture(scope="session")
def auth_server(upstream: Upstream) -> Iterator[str]:
    """A server that requires the API key ``service-key`` and holds an upstream key."""
    from tests.support.servers import UPSTREAM_KEY, base_settings, serve

    settings = base_settings(upstream, api_keys=frozenset({"service-key"}), upstream_api_key=UPSTREAM_KEY)
    yield from serve(settings)


@pytest.fixture
def gate() -> Iterator[type[Gate]]:
    """`Gate` registered as ``test_gate`` for one test, closed; released and unregistered afterwards."""
    from promptshrink import registry
    from tests.support.gate import Gate

    registry.method_names()  # discover the real methods first
    registry.register(Gate)
    Gate.started.clear()
    Gate.release.clear()
    yield Gate
    Gate.release.set()
    registry.METHODS.unregister(Gate.name)
