#!/usr/bin/env bash
set -u
export PYTHONPATH=$PWD/python NVFP4_CUDA_ARCHS=90a PYTHONUNBUFFERED=1 NVFP4_LIBRARY=$PWD/.devlib/libnvfp4_kernels.so
cat > /tmp/san.py <<'PY'
import sys, torch
sys.path.insert(0, "tests")
from gpu_data import random_layer, random_rows
from nvfp4.sm90_plan import forced_split_reduce, sm90_plan
for n, k, ms in ((6144, 1024, (1, 5, 16, 33, 64)), (1000, 4000, (1, 9, 64)), (3000, 2048, (3, 17))):
    layer = random_layer(n, k, seed=1)
    for m in ms:
        x = random_rows(m, k, seed=m)
        with forced_split_reduce("kernel"):
            a = layer(x)
        with forced_split_reduce("cluster"):
            b = layer(x)
        torch.cuda.synchronize()
        print(n, k, m, sm90_plan(m, n, k), "equal" if torch.equal(a, b) else "DIFFER")
PY
for tool in memcheck racecheck synccheck; do
  timeout 170 compute-sanitizer --tool $tool --kernel-name kns=nvfp4_sm90_gemm_kernel python3 /tmp/san.py > $OUT/san_$tool.log 2>&1; echo "$tool rc=$?"; tail -2 $OUT/san_$tool.log
done
