"""What test modules import besides fixtures (those are in the conftest.py files): sample texts, helpers that
start real servers, which models are installed. Nothing here imports a test module.

- ``models``: ``needs_lm``, ``model_installed``, random-weight copies of the bundled LM;
- ``texts``: sample texts shared by several modules;
- ``servers``: uvicorn servers on loopback ports, the stub upstream, ``base_settings``, ``plain_and_ray``;
- ``upstreams``: real upstreams for the proxy tests (`transformers serve`, a LiteLLM proxy);
- ``gate``: a test-only method that is busy until the test releases it;
- ``tiny_llama``: a tiny random-weight Llama for the KV press tests.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
