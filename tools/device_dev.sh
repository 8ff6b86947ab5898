#!/usr/bin/env bash
# Development run on the device machine (carry .deps): build sm_90a only, then STAGES (comma list) of
#   smoke   tools/sm90_smoke.py (every case printed before it runs)
#   tests   the Hopper tests (NVFP4_WRITE_FINGERPRINT=1 also rewrites tests/fingerprints/sm90.json into $OUT)
#   suite   the whole test suite
#   sanitize compute-sanitizer memcheck and racecheck over the small smoke cases
#   bench   bench/compare.py on the llama presets with M from NVFP4_BENCH_M (default 1,16,64,4096), no emulation/Triton
# Each stage has its own time limit; logs under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
STAGES=",${1:-smoke,tests},"
mkdir -p "$OUT"
export NVFP4_CUTLASS_INCLUDE_DIR=$PWD/.deps/cutlass_library/source/include NVFP4_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=16
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
start=$SECONDS
timeout 400 python3 -m pip install --no-build-isolation --no-deps -q . > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $((SECONDS - start)) s"
run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "$name rc=$? ($((SECONDS - start)) s)"; tail -5 "$OUT/$name.log"; }
[[ $STAGES == *,smoke,* ]] && run smoke 150 python3 tools/sm90_smoke.py
if [[ $STAGES == *,tests,* ]]; then
  run tests 420 python3 -m pytest tests/test_gemm_sm90.py tests/test_fingerprint_sm90.py tests/test_quantizer_cuda.py tests/test_compile.py -q -x -p no:cacheprovider -rs
  [ -f tests/fingerprints/sm90.json ] && cp tests/fingerprints/sm90.json "$OUT/"
fi
[[ $STAGES == *,suite,* ]] && run suite 420 python3 -m pytest tests -q -p no:cacheprovider -rs
if [[ $STAGES == *,sanitize,* ]]; then
  run memcheck 200 compute-sanitizer --tool memcheck --error-exitcode 9 python3 tools/sm90_smoke.py --small
  run racecheck 250 compute-sanitizer --tool racecheck --error-exitcode 9 python3 tools/sm90_smoke.py --small
fi
[[ $STAGES == *,bench,* ]] && run bench 400 python3 bench/compare.py --preset llama-3.1-8b,llama-3.1-70b --m "${NVFP4_BENCH_M:-1,16,64,4096}" --no-emulation --no-triton --no-plots --out "$OUT"
echo "total $((SECONDS - start)) s"
