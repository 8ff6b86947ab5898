#!/usr/bin/env bash
# Build the sm_90a NVFP4 GEMM + dev harness with nvcc and run checks/benchmarks; logs under $OUT (or ./out).
# Usage (repo root): bash cpp/kernels/sm90/dev/run_on_device.sh [check|bench|decode|all|sanitize|full] [quick]
#   full = check (all shapes) + sanitizers + decode bench of a 3-stage variant + full bench + one ncu profile
set -uo pipefail
MODE=${1:-all}
QUICK=${2:-}
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/../../../.." && pwd)
SRC=$ROOT/cpp/kernels/sm90
BUILD=${BUILD:-/tmp/nvfp4_sm90_build}
mkdir -p "$BUILD"
FLAGS="-std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I$ROOT/cpp/include -I$ROOT/cpp/src -DNVFP4_COMPILED_ARCHS=90"
LOG=$OUT/sm90-$MODE.log
# cuBLAS for the comparison column: the toolkit's, else the pip wheel's (torch ships nvidia-cublas), else none.
CUBLAS_FLAGS="-DNO_CUBLAS"; CUBLAS_LINK=""
NVCC_DIR=$(dirname "$(command -v nvcc)")/..
if [ -f "$NVCC_DIR/include/cublas_v2.h" ]; then
  CUBLAS_FLAGS=""; CUBLAS_LINK="-lcublas"
else
  H=$(find / -name cublas_v2.h -path '*nvidia*' 2>/dev/null | head -1)
  if [ -n "$H" ]; then
    D=$(dirname "$(dirname "$H")")
    L=$(ls "$D"/lib/libcublas.so* 2>/dev/null | head -1)
    if [ -n "$L" ]; then
      CUBLAS_FLAGS="-I$D/include"; CUBLAS_LINK="-L$D/lib -l:$(basename "$L") -Xlinker -rpath=$D/lib"
      LT=$(ls "$D"/lib/libcublasLt.so* 2>/dev/null | head -1); [ -n "$LT" ] && CUBLAS_LINK="$CUBLAS_LINK -l:$(basename "$LT")"
    fi
  fi
fi
{
  echo "== build $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>/dev/null
  pids=()
  for f in gemm_bt8 gemm_bt16 gemm_bt32 gemm_bt64 gemm_bt128 gemm_ws_bt128 dispatch; do
    nvcc $FLAGS -Xptxas -warn-spills -c "$SRC/$f.cu" -o "$BUILD/$f.o" 2>&1 | grep -v '^$' &
    pids+=($!)
  done
  nvcc $FLAGS -c "$ROOT/cpp/src/abi.cpp" -o "$BUILD/abi.o" &
  echo "cublas: $CUBLAS_FLAGS $CUBLAS_LINK"
  nvcc $FLAGS $CUBLAS_FLAGS -c "$SRC/dev/harness.cu" -o "$BUILD/harness.o" &
  wait
  OBJS="$BUILD/gemm_bt8.o $BUILD/gemm_bt16.o $BUILD/gemm_bt32.o $BUILD/gemm_bt64.o $BUILD/gemm_bt128.o $BUILD/gemm_ws_bt128.o $BUILD/dispatch.o $BUILD/abi.o $BUILD/harness.o"
  nvcc -gencode arch=compute_90a,code=sm_90a -o "$BUILD/harness" $OBJS $CUBLAS_LINK || { echo "link failed"; exit 1; }
  echo "== run $MODE $QUICK"
  if [ "$MODE" = full ]; then
    # 3-stage variant for comparison (decode only)
    for f in gemm_bt8 gemm_bt16 gemm_bt32 gemm_bt64 gemm_bt128 gemm_ws_bt128 dispatch; do
      nvcc $FLAGS -DNVFP4_SM90_STAGES=3 -c "$SRC/$f.cu" -o "$BUILD/s3_$f.o" &
    done
    wait
    nvcc -gencode arch=compute_90a,code=sm_90a -o "$BUILD/harness_s3" "$BUILD"/s3_*.o "$BUILD/abi.o" "$BUILD/harness.o" $CUBLAS_LINK
    "$BUILD/harness" check; echo "check exit: $?"
    for tool in memcheck racecheck synccheck initcheck; do
      echo "-- compute-sanitizer $tool"; compute-sanitizer --tool $tool "$BUILD/harness" small 2>&1 | tail -3
    done
    echo "-- decode bench, 3 stages"; "$BUILD/harness_s3" decode
    echo "-- full bench, 4 stages"; "$BUILD/harness" bench
    echo "-- ncu 8192x8192 M=1 inv"
    ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy -k regex:nvfp4_sm90 "$BUILD/harness" one 8192 8192 1 1 2>&1 | grep -vE "^==PROF==|^\s*$" | tail -120 > "$OUT/ncu.txt"
    cuobjdump -sass -fun '_ZN5nvfp44sm9022nvfp4_sm90_gemm_kernelILi8ELi256ELi4E13__nv_bfloat16Lb1EEEvNS0_10GemmParamsE' "$BUILD/gemm_bt8.o" > "$OUT/sass_bt8.txt" 2>&1
    grep -oE "HGMMA[^ ;]*|HMUL2[^ ;]*|LDS[^ ;]*|IMAD[^ ;]*|LOP3[^ ;]*|SHF[^ ;]*" "$OUT/sass_bt8.txt" | sort | uniq -c
  elif [ "$MODE" = sanitize ]; then
    compute-sanitizer --tool memcheck "$BUILD/harness" small 2>&1 | tail -5
    compute-sanitizer --tool racecheck "$BUILD/harness" small 2>&1 | tail -5
    compute-sanitizer --tool synccheck "$BUILD/harness" small 2>&1 | tail -3
    compute-sanitizer --tool initcheck "$BUILD/harness" small 2>&1 | tail -3
  else
    "$BUILD/harness" "$MODE" $QUICK
    echo "harness exit: $?"
  fi
} 2>&1 | tee "$LOG"
