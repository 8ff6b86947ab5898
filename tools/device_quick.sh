#!/usr/bin/env bash
# One device call (about 8 minutes on an H100) that measures what lands: builds this tree for sm_90a (and, given
# OLD_DIR, a baseline: `git archive <commit> | tar -x -C OLD_DIR --exclude=bench/results --exclude=tests/fixtures`,
# tests/ included), then smoke -> the Hopper tests (quantizer, GEMM, fingerprint compared -- WRITE_FINGERPRINT=1
# rewrites it --, MoE) -> sanitizers -> compare.py on the llama presets at NVFP4_BENCH_M (default M = 1..8192 in
# powers of two) -> the baseline's compare.py on the same grid -> bench_moe.py -> acceptance.py. FULL=1 runs the
# whole suite and `nvfp4 check` instead of smoke and the Hopper tests; PDL=1, FUSED=1 and PROFILE add decode grids
# and ncu reports; a *_S variable bounds each step (1 skips it). Carry .deps (and OLD_DIR, git-ignored). Every step
# has a time limit so that the call returns inside the device's 10 minutes; logs and JSON land in $OUT/run.tar.gz.
#   bash tools/device_quick.sh [OLD_DIR]
# Set NVFP4_COMMIT / NVFP4_OLD_COMMIT: a tree built from an archive inside this checkout would record the
# checkout's HEAD.
set -uo pipefail
OUT=${OUT:-/tmp/out}
OLD=${1:-}
W=/tmp/work; mkdir -p $W/new $W/old
export NVFP4_CUTLASS_INCLUDE_DIR=$PWD/.deps/cutlass_library/source/include NVFP4_CUDA_ARCHS=90a
export PYTHONUNBUFFERED=1
M=${NVFP4_BENCH_M:-1,2,4,8,16,32,64,128,256,512,1024,2048,4096,8192}
ARGS="--preset llama-3.1-8b,llama-3.1-70b --m $M --no-emulation --no-plots"
start=$SECONDS
t() { echo "[$((SECONDS - start)) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $W/gpu.txt; cat $W/gpu.txt
if [ -n "$OLD" ]; then
  (cd "$OLD" && CMAKE_BUILD_PARALLEL_LEVEL=6 python3 -m pip install --no-build-isolation --no-deps -q --target /tmp/oldsite . > $W/old/build.log 2>&1; echo "rc=$?" >> $W/old/build.log) &
fi
CMAKE_BUILD_PARALLEL_LEVEL=10 timeout 200 python3 -m pip install --no-build-isolation --no-deps -q . > $W/new/build.log 2>&1 || { tail -30 $W/new/build.log; }
t "built"
if [ -z "${FULL:-}" ]; then  # (the whole suite covers these)
  timeout ${SMOKE_S:-60} python3 tools/sm90_smoke.py > $W/smoke.log 2>&1; t "smoke rc=$?"; grep -E "FAIL|DIFFERS|smoke:" $W/smoke.log | head -20
  NVFP4_WRITE_FINGERPRINT=${WRITE_FINGERPRINT:-0} timeout ${TESTS_S:-150} python3 -m pytest ${TESTS:-tests/test_quantizer_cuda.py tests/test_gemm_sm90.py tests/test_fingerprint_sm90.py tests/test_moe_sm90.py} -q -p no:cacheprovider -rs > $W/tests.log 2>&1; t "tests rc=$?"; tail -12 $W/tests.log
fi
if [ -n "${FULL:-}" ]; then  # FULL=1: the whole suite and `nvfp4 check` instead of smoke and the Hopper tests
  timeout ${FULL_S:-330} python3 -m pytest tests -q -p no:cacheprovider -rs --durations=15 > $W/pytest-full.log 2>&1; t "full suite rc=$?"; grep -E "FAILED|ERROR|passed|failed" $W/pytest-full.log | tail -12
  timeout 60 python3 -m nvfp4 check --device cuda > $W/nvfp4-check.log 2>&1; t "nvfp4 check rc=$?"; tail -3 $W/nvfp4-check.log
fi
cp tests/fingerprints/sm90.json $W/ 2>/dev/null
for tool in memcheck racecheck; do  # small shapes: grouped GEMM, fused quantizer, decode GEMM, quantizer
  timeout ${SANITIZE_S:-60} compute-sanitizer --tool $tool python3 -m pytest tests/test_moe_sm90.py tests/test_gemm_sm90.py \
    tests/test_quantizer_cuda.py -q -p no:cacheprovider -k "offsets_out_of_range or both_quantizer or (accuracy and 160) \
    or padding_is_zeroed or strided_rows" > $W/$tool.log 2>&1; t "$tool rc=$?"; tail -2 $W/$tool.log
done
if [ -n "${PROFILE:-}" ]; then  # PROFILE="N K M;N K M..." : ncu stall reasons and memory throughput of the quantizer and GEMM
  IFS=';' read -ra specs <<< "$PROFILE"
  for spec in "${specs[@]}"; do
    tag=$(echo $spec | tr ' ' x)
    timeout 90 ncu --clock-control none -k regex:"nvfp4_sm90_kernel|quantize_rows" --launch-skip 4 --launch-count 2 \
      --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
      --section LaunchStats --section Occupancy --section ComputeWorkloadAnalysis --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active" \
      python3 tools/sm90_profile.py $spec > $W/ncu-$tag.log 2>&1; t "ncu $spec rc=$?"
    grep -E "nvfp4_sm90_kernel|quantize_rows|Duration|DRAM Throughput|Memory Throughput|Stall|Warp Cycles Per Issued|Issued Warp|Eligible|Registers Per|Grid Size|Cluster|stalled|pipe_|Executed Ipc|Issue Slots" $W/ncu-$tag.log | awk '$NF+0 > 0.05 || !/stalled/' | head -90
  done
fi
timeout ${BENCH_S:-170} python3 bench/compare.py $ARGS --out $W/new > $W/new/compare.log 2>&1; t "compare new rc=$?"
if [ -n "$OLD" ]; then
  wait; tail -1 $W/old/build.log
  (cd "$OLD" && NVFP4_COMMIT=${NVFP4_OLD_COMMIT:-baseline} PYTHONPATH=/tmp/oldsite timeout ${BENCH_S:-170} python3 bench/compare.py $ARGS --out $W/old > $W/old/compare.log 2>&1); t "compare old rc=$?"
fi
if [ -n "${PDL:-}" ]; then  # PDL=1: the decode grid again with the GEMM launched as the quantizer's dependent
  timeout ${PDL_S:-60} python3 bench/compare.py --preset llama-3.1-8b,llama-3.1-70b --m 1,2,4,8,16,32,64 --no-emulation \
    --no-triton --no-plots --sm90-pdl --tag pdl --out $W/pdl > $W/pdl.log 2>&1; t "compare pdl rc=$?"
fi
if [ -n "${FUSED:-}" ]; then  # FUSED=1: the decode grid again with the activations quantized inside the GEMM
  timeout ${FUSED_S:-60} python3 bench/compare.py --preset llama-3.1-8b,llama-3.1-70b --m 1,2,4,8,16,32,64 --no-emulation \
    --no-triton --no-plots --sm90-fused always --tag fused --out $W/fused > $W/fused.log 2>&1; t "compare fused rc=$?"
fi
timeout ${MOE_S:-90} python3 bench/bench_moe.py --out $W/new > $W/new/moe.log 2>&1; t "moe bench rc=$?"
for j in $W/new/compare-*.json; do [ -f "$j" ] && python3 bench/acceptance.py "$j" $(ls $W/old/compare-*.json 2>/dev/null | sed 's/^/--baseline /'); done
tar -czf $OUT/run.tar.gz -C $W .
t "done"
