#!/usr/bin/env bash
# Dev experiment for the warp-specialised kernel: builds everything (run_on_device.sh), then variants of
# gemm_ws_bt128.cu with -D flags given as arguments ("NAME:FLAGS" ...), and times each with `harness prefill`.
set -uo pipefail
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/../../../.." && pwd); SRC=$ROOT/cpp/kernels/sm90; B=/tmp/nvfp4_sm90_build
bash "$SRC/dev/run_on_device.sh" none > "$OUT/build.txt" 2>&1
FLAGS="-std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I$ROOT/cpp/include -I$ROOT/cpp/src -DNVFP4_COMPILED_ARCHS=90"
LINK=$(grep '^cublas:' "$OUT/build.txt" | sed 's/^cublas: [^ ]* *//')
OTHERS="$B/gemm_bt8.o $B/gemm_bt16.o $B/gemm_bt32.o $B/gemm_bt64.o $B/gemm_bt128.o $B/dispatch.o $B/abi.o $B/harness.o"
for v in "$@"; do
  name=${v%%:*}; fl=${v#*:}
  nvcc $FLAGS $fl -Xptxas -warn-spills -c "$SRC/gemm_ws_bt128.cu" -o "$B/ws_$name.o" && \
  nvcc -gencode arch=compute_90a,code=sm_90a -o "$B/h_$name" $OTHERS "$B/ws_$name.o" $LINK &
done
wait
for v in "$@"; do
  name=${v%%:*}
  echo "== variant $name: ${v#*:}"
  "$B/h_$name" prefill 2>&1 | grep '^\[bench\] [0-9]'
done
