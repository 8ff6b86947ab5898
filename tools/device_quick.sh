#!/usr/bin/env bash
# One short device call (carry .deps and, optionally, OLD_DIR = a `git archive` of a baseline commit): builds this
# tree (and the baseline in the background), then smoke -> Hopper tests (writes the fingerprint) -> compare.py on the
# llama presets at NVFP4_BENCH_M -> the baseline's compare.py on the same points. Each step has a time limit so the
# call returns inside the device's 10 minutes; everything lands in $OUT/run.tar.gz (logs, JSON, fingerprint).
set -uo pipefail
OUT=${OUT:-/tmp/out}
OLD=${1:-}
W=/tmp/work; mkdir -p $W/new $W/old
export NVFP4_CUTLASS_INCLUDE_DIR=$PWD/.deps/cutlass_library/source/include NVFP4_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=16
export PYTHONUNBUFFERED=1
M=${NVFP4_BENCH_M:-1,16,64,4096}
ARGS="--preset llama-3.1-8b,llama-3.1-70b --m $M --no-emulation --no-triton --no-plots"
start=$SECONDS
t() { echo "[$((SECONDS - start)) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $W/gpu.txt; cat $W/gpu.txt
if [ -n "$OLD" ]; then
  (cd "$OLD" && CMAKE_BUILD_PARALLEL_LEVEL=6 python3 -m pip install --no-build-isolation --no-deps -q --target /tmp/oldsite . > $W/old/build.log 2>&1; echo "rc=$?" >> $W/old/build.log) &
fi
timeout 200 python3 -m pip install --no-build-isolation --no-deps -q . > $W/new/build.log 2>&1 || { tail -30 $W/new/build.log; }
t "built"
timeout ${SMOKE_S:-80} python3 tools/sm90_smoke.py > $W/smoke.log 2>&1; t "smoke rc=$?"; grep -E "FAIL|DIFFERS|smoke:" $W/smoke.log | head -20; tail -2 $W/smoke.log
NVFP4_WRITE_FINGERPRINT=1 timeout ${TESTS_S:-200} python3 -m pytest tests/test_gemm_sm90.py tests/test_fingerprint_sm90.py -q -x -p no:cacheprovider -rs > $W/tests.log 2>&1; t "tests rc=$?"; tail -25 $W/tests.log
cp tests/fingerprints/sm90.json $W/ 2>/dev/null
if [ -n "${PROFILE:-}" ]; then  # PROFILE="N K M" : ncu stall reasons and memory throughput of that layer call
  timeout 90 ncu --clock-control none -k regex:nvfp4_sm90_kernel --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --section LaunchStats --section Occupancy python3 tools/sm90_profile.py $PROFILE > $W/ncu.log 2>&1; t "ncu rc=$?"
  grep -E "Duration|Throughput|Stall|Warp Cycles|Issued|Eligible|Achieved Occupancy|Registers|Block Limit" $W/ncu.log | head -60
fi
timeout ${BENCH_S:-130} python3 bench/compare.py $ARGS --out $W/new > $W/new/compare.log 2>&1; t "compare new rc=$?"
if [ -n "$OLD" ]; then
  wait; tail -1 $W/old/build.log
  (cd "$OLD" && PYTHONPATH=/tmp/oldsite timeout ${BENCH_S:-130} python3 bench/compare.py $ARGS --out $W/old > $W/old/compare.log 2>&1); t "compare old rc=$?"
fi
for j in $W/new/compare-*.json; do [ -f "$j" ] && python3 bench/acceptance.py "$j" $(ls $W/old/compare-*.json 2>/dev/null | sed 's/^/--baseline /'); done
tar -czf $OUT/run.tar.gz -C $W .
t "done"
