#!/usr/bin/env bash
# Benchmarks on the GPU machine: builds nvfp4 for sm_90a, builds nvfp4_bench (bench/, standalone CMake) against
# the very libnvfp4_kernels.so the Python package loads, runs nvfp4_bench and bench/compare.py on the same grid (the
# llama-3.1-8b and llama-3.1-70b presets, M = 1..8192), writes JSON/CSV/logs to $OUT and prints the agreement table
# between the C++ and Python timings of the same kernels (5% tolerance).
#
# Usage on the device machine (carry .deps and .whl, like tools/device_run.sh):
#   bash tools/device_bench.sh [--quick] [STAGES]        STAGES: comma list of build,ctest,cpp,py,agree (default all)
# One device command is limited to 10 minutes: if the full grid does not fit, run the stages in separate calls
# (build,ctest,cpp then py then agree); the build and the JSONs stay in build/device-bench/ between calls.
# Extra arguments for both harnesses: NVFP4_BENCH_ARGS (e.g. "--m 1,16,256,4096"), replacing the presets' grid.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
WORK=$PWD/build/device-bench
mkdir -p "$OUT" "$WORK/results"
QUICK=""
if [ "${1:-}" = "--quick" ]; then QUICK="--quick"; shift; fi
STAGES=",${1:-build,ctest,cpp,py,agree},"
ARGS=${NVFP4_BENCH_ARGS:-"--preset llama-3.1-8b,llama-3.1-70b"}
[ -n "$QUICK" ] && ARGS="--quick ${NVFP4_BENCH_ARGS:-}"

if [ -d .devsnap ]; then  # build and run exactly the committed sources (tools/snapshot_for_device.sh)
  rm -rf cpp cmake python tests bench && cp -r .devsnap/* . && echo "using the HEAD snapshot $(cat COMMIT) from .devsnap"
fi
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
fi
export NVFP4_CUTLASS_INCLUDE_DIR=$PWD/.deps/cutlass_library/source/include NVFP4_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=16
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
echo "date: $(date -u +%FT%TZ)  commit: $(cat COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo working-tree)  args: $ARGS" \
  | tee -a "$OUT/gpu.txt"

if [[ $STAGES == *,build,* ]]; then
  start=$SECONDS
  python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
  LIB=$(cd /tmp && python3 -c "import nvfp4._lib as l; print(l.library_path() or '')")
  [ -n "$LIB" ] || { echo "the installed nvfp4 has no kernel library"; exit 1; }
  { cmake -S bench -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DNVFP4_CUDA_ARCHS=90a -DNVFP4_LIBRARY="$LIB" \
      && cmake --build "$WORK/build" -j 16; } >> "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
  grep -E "nvfp4_bench:" "$OUT/build.log"
  echo "build (library + nvfp4_bench): $((SECONDS - start)) s; library $LIB"
fi
BENCH=$WORK/build/nvfp4_bench
[ -x "$BENCH" ] || { echo "no $BENCH: run the build stage first"; exit 1; }

if [[ $STAGES == *,ctest,* ]]; then
  (cd "$WORK/build" && ctest -L bench --output-on-failure) > "$OUT/ctest.log" 2>&1; echo "ctest -L bench: rc=$? (log: ctest.log)"
fi
if [[ $STAGES == *,cpp,* ]]; then
  rm -f "$WORK"/results/nvfp4_bench-*.json
  # shellcheck disable=SC2086
  "$BENCH" $ARGS --out "$WORK/results" 2>&1 | tee "$OUT/nvfp4_bench.log"
  echo "nvfp4_bench: rc=${PIPESTATUS[0]}"
  cp "$WORK"/results/nvfp4_bench-* "$OUT"/ 2>/dev/null
fi
if [[ $STAGES == *,py,* ]]; then
  rm -f "$WORK"/results/compare-*.json
  # shellcheck disable=SC2086
  python3 bench/compare.py $ARGS --out "$WORK/results" --no-plots 2>&1 | tee "$OUT/compare.log"
  echo "compare.py: rc=${PIPESTATUS[0]}"
  cp "$WORK"/results/compare-* "$OUT"/ 2>/dev/null
fi
if [[ $STAGES == *,agree,* ]]; then
  CPP_JSON=$(ls -t "$WORK"/results/nvfp4_bench-*.json 2>/dev/null | head -1)
  PY_JSON=$(ls -t "$WORK"/results/compare-*.json 2>/dev/null | head -1)
  if [ -n "$CPP_JSON" ] && [ -n "$PY_JSON" ]; then
    python3 bench/compare.py --agreement "$CPP_JSON" "$PY_JSON" | tee "$OUT/agreement.txt"
    echo "agreement: rc=${PIPESTATUS[0]} (0: every GEMM row within 5%)"
  else
    echo "agreement: need both JSONs (cpp: ${CPP_JSON:-none}, py: ${PY_JSON:-none})"
  fi
fi
