#!/usr/bin/env bash
# Baseline and candidate in one device session (carry .deps and OLD_DIR): builds the tree in OLD_DIR (e.g. a
# `git archive` of the baseline commit) into its own site folder and this tree as the installed package, then runs
# bench/compare.py of each on the same presets and M values. JSON and logs under $OUT/old and $OUT/new.
#   bash tools/device_bench_pair.sh OLD_DIR [compare.py args...]
set -uo pipefail
OUT=${OUT:-/tmp/out}
OLD=$1; shift
ARGS=${*:-"--preset llama-3.1-8b,llama-3.1-70b --no-emulation --no-plots"}
mkdir -p "$OUT/old" "$OUT/new"
export NVFP4_CUTLASS_INCLUDE_DIR=$PWD/.deps/cutlass_library/source/include NVFP4_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=16
export PYTHONUNBUFFERED=1
start=$SECONDS
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/new/build.log" 2>&1 || { tail -30 "$OUT/new/build.log"; exit 1; } &
(cd "$OLD" && python3 -m pip install --no-build-isolation --no-deps -q --target /tmp/oldsite . > "$OUT/old/build.log" 2>&1) || { tail -30 "$OUT/old/build.log"; exit 1; }
wait
echo "builds: $((SECONDS - start)) s"
# shellcheck disable=SC2086
(cd "$OLD" && PYTHONPATH=/tmp/oldsite timeout 280 python3 bench/compare.py $ARGS --out "$OUT/old" > "$OUT/old/compare.log" 2>&1); echo "old rc=$? ($((SECONDS - start)) s)"
# shellcheck disable=SC2086
timeout 280 python3 bench/compare.py $ARGS --out "$OUT/new" > "$OUT/new/compare.log" 2>&1; echo "new rc=$? ($((SECONDS - start)) s)"
tail -3 "$OUT/old/compare.log" "$OUT/new/compare.log"
