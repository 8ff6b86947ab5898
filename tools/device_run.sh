#!/usr/bin/env bash
# One device call: build sm_90a only, install, run the whole test suite and (if present) the benchmark.
# Usage on the device machine (carry .deps and .whl):  bash tools/device_run.sh [pytest args...]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .devsnap ]; then  # build and test exactly the committed sources (tools/snapshot_for_device.sh)
  rm -rf cpp cmake python tests bench && cp -r .devsnap/* . && echo "using the HEAD snapshot $(cat COMMIT) from .devsnap"
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
export NVFP4_CUTLASS_INCLUDE_DIR=$PWD/.deps/cutlass_library/source/include NVFP4_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=16
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
start=$SECONDS
python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $((SECONDS - start)) s"
cd /tmp && python3 -c "import nvfp4, json; print(json.dumps(nvfp4.kernel_info(), indent=1))" | tee "$OUT/kernel_info.json"; cd - >/dev/null
{ echo "date: $(date -u +%FT%TZ)  commit: $(cat COMMIT 2>/dev/null || echo working-tree)"; cat "$OUT/gpu.txt"; } > "$OUT/pytest.log"
PYTHONUNBUFFERED=1 python3 -m pytest tests -v -p no:cacheprovider -rs "$@" 2>&1 | tee -a "$OUT/pytest.log" | grep -E "FAILED|ERROR|passed|failed"
(cd /tmp && python3 -m nvfp4 check) 2>&1 | tee "$OUT/nvfp4-check.log"
if [ -n "${NVFP4_BENCH+x}" ]; then
  PYTHONUNBUFFERED=1 python3 bench/bench_hopper.py $NVFP4_BENCH --out "$OUT" 2>&1 | tee "$OUT/bench.log"
fi
