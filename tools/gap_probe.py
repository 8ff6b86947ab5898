"""Diagnostic (device only, issue 6), torch-free: does a process that never touches torch also slow down after its
first timed graph replays? Everything goes through ctypes: libcudart, the nvfp4 kernel library, nvfp4_bench's own
fill kernels (compiled from bench/cpp/nvfp4_bench.cu) and a busy-wait kernel.

    python tools/gap_probe.py [--import-torch | --cxx] RECIPE...    (--cxx: the same as a compiled C++ program;
    --cxx also knows e (eager calls over every copy), Q (5000 eager quantizer calls), D (destroy the graphs),
    B (nvfp4_bench's read-bandwidth graph), N (run nvidia-smi), L (a kernel on the legacy default stream + sync);
    GAP_PROBE_N=4096 sets N (default 6144);
    GAP_PROBE_BIG_FIRST=1 (--cxx) allocates, fills and frees 2 GiB before the weights, as nvfp4_bench does;
    GAP_ST_SETUP=bits (--cxx) runs setup work on the timing stream instead of the legacy default stream: 1 weight
    fills, 2 scale memsets (async), 4 activation fill, 8 quantize (15: all, as nvfp4_bench);
    GAP_WARM_FIRST_MS (--cxx) warm-up of the first `t` (default 30); GAP_SETTLE=1 (--cxx) settled best as the harnesses;
    GAP_PROBE_SCHEDULE=spin|yield|blocking sets cudaSetDeviceFlags before the first CUDA call)
steps: cap (capture a new graph), t (time the newest), D (destroy all graphs), M (cudaMalloc + cudaFree 64 MiB),
S (4-byte device-to-host copy + stream sync)
"""
import ctypes
import glob
import math
import os
import subprocess
import sys

sys.path.insert(0, "tools")
from probe_common import bench_fill_source, ck, fill_library  # noqa: E402

CXX_MAIN = r"""
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <cmath>
#include "nvfp4/nvfp4.h"
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("%s: %s\n", #x, cudaGetErrorString(e_)); return 1; } } while (0)
#define NV(x) do { int r_ = (x); if (r_) { printf("%s: nvfp4 error %d\n", #x, r_); return 1; } } while (0)
int main(int argc, char** argv) {
  const long long n = getenv("GAP_PROBE_N") ? atoll(getenv("GAP_PROBE_N")) : 6144, k = 4096, m = 1;
  const size_t wbytes = n * k / 2 + n * k / 16;
  const int copies = (int)std::min<size_t>(64, std::max<size_t>(1, ((200u << 20) + wbytes - 1) / wbytes));
  const int calls = std::max(20, copies);
  const size_t sbytes = (size_t)((n + 127) / 128 * 128) * ((k / 16 + 3) / 4 * 4);
  if (getenv("GAP_PROBE_BIG_FIRST")) {  // nvfp4_bench allocates, fills and frees a 2 GiB buffer first (read bandwidth)
    void* big; CK(cudaMalloc(&big, (size_t)2 << 30)); CK(cudaMemset(big, 1, (size_t)2 << 30));
    CK(cudaDeviceSynchronize()); CK(cudaFree(big));
  }
  // setup on the timing stream, async (as nvfp4_bench): bit 1 weight fills, 2 scale memsets, 4 activation fill, 8 quantize
  const int st_bits = getenv("GAP_ST_SETUP") ? atoi(getenv("GAP_ST_SETUP")) : 0;
  cudaStream_t st; CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  auto ss_for = [&](int bit) { return (st_bits & bit) ? st : (cudaStream_t)0; };
  std::vector<void*> w(copies), sc(copies);
  for (int c = 0; c < copies; ++c) {
    CK(cudaMalloc(&w[c], n * k / 2)); CK(cudaMalloc(&sc[c], sbytes));
    fill_bytes_kernel<<<264, 256, 0, ss_for(1)>>>((uint8_t*)w[c], n * k / 2, 1000 + c);
    if (st_bits & 2) CK(cudaMemsetAsync(sc[c], 0, sbytes, st)); else CK(cudaMemset(sc[c], 0, sbytes));
    fill_scales_kernel<<<264, 256, 0, ss_for(1)>>>((uint8_t*)sc[c], n, k / 16, 2000 + c);
  }
  void *bias, *x, *act, *alpha, *out, *wgs, *ws;
  CK(cudaMalloc(&bias, n * 2)); CK(cudaMemset(bias, 0, n * 2));
  CK(cudaMalloc(&x, m * k * 2)); CK(cudaMalloc(&act, m * k * 2)); CK(cudaMalloc(&alpha, m * 4));
  CK(cudaMalloc(&out, m * n * 2)); CK(cudaMalloc(&wgs, 4));
  float g = 0.75f; CK(cudaMemcpy(wgs, &g, 4, cudaMemcpyHostToDevice));
  fill_activations_kernel<<<264, 256, 0, ss_for(4)>>>((__nv_bfloat16*)x, m, k, 5000 + m);
  NV(nvfp4_quantize_activations(x, NVFP4_DTYPE_BF16, m, k, k, nullptr, (float*)alpha, (float*)wgs, nullptr, nullptr, act, ss_for(8)));
  size_t wsb = 0; NV(nvfp4_sm90_gemm_workspace_size(m, n, k, 1, &wsb)); CK(cudaMalloc(&ws, wsb));
  const double warm_first_ms = getenv("GAP_WARM_FIRST_MS") ? atof(getenv("GAP_WARM_FIRST_MS")) : 30.0;
  const bool settle = getenv("GAP_SETTLE") != nullptr;
  bool first_t = true;
  cudaEvent_t e0, e1; CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
  CK(cudaDeviceSynchronize());
  float ms = 0;
  spin_kernel<<<1, 1, 0, st>>>(2000000); CK(cudaEventRecord(e0, st)); spin_kernel<<<1, 1, 0, st>>>(2000000);
  CK(cudaEventRecord(e1, st)); CK(cudaEventSynchronize(e1)); CK(cudaEventElapsedTime(&ms, e0, e1));
  const long long spin = (long long)(200.0 * 2000000 / (ms * 1000.0));
  std::vector<cudaGraphExec_t> graphs;
  printf("gap_probe (C++)");
  for (int i = 1; i < argc; ++i) printf(" %s", argv[i]);
  printf("  (N=%lld K=%lld M=%lld, %d copies, %d calls)\n", n, k, m, copies, calls);
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "cap")) {
      cudaGraph_t gr; cudaGraphExec_t ex;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      for (int c = 0; c < calls; ++c)
        NV(nvfp4_sm90_gemm(act, k, m, n, k, (const uint8_t*)w[c % copies], (const uint8_t*)sc[c % copies], (const float*)alpha, 1,
                           bias, out, NVFP4_DTYPE_BF16, n, 1, ws, wsb, st));
      CK(cudaStreamEndCapture(st, &gr)); CK(cudaGraphInstantiate(&ex, gr, 0)); graphs.push_back(ex);
    } else if (!strcmp(argv[i], "e")) {  // eager calls over every copy + sync (nvfp4_bench does this before capturing)
      for (int c = 0; c < copies; ++c)
        NV(nvfp4_sm90_gemm(act, k, m, n, k, (const uint8_t*)w[c], (const uint8_t*)sc[c], (const float*)alpha, 1,
                           bias, out, NVFP4_DTYPE_BF16, n, 1, ws, wsb, st));
      CK(cudaStreamSynchronize(st));
    } else if (!strcmp(argv[i], "Q")) {  // 30 ms of another kernel (the quantizer), eager
      for (int r = 0; r < 5000; ++r)
        NV(nvfp4_quantize_activations(x, NVFP4_DTYPE_BF16, m, k, k, nullptr, (float*)alpha, (float*)wgs, nullptr, nullptr, act, st));
      CK(cudaStreamSynchronize(st));
    } else if (!strcmp(argv[i], "B")) {  // nvfp4_bench's read-bandwidth measurement: 2 GiB, a graph of 5 read kernels
      const size_t bytes = (size_t)2 << 30; void *buf, *sink; CK(cudaMalloc(&buf, bytes)); CK(cudaMalloc(&sink, 4));
      CK(cudaMemset(buf, 0, bytes));
      auto rk = [&]() { read_kernel<<<132 * 8, 512, 0, st>>>((const float4*)buf, bytes / 16, (float*)sink); };
      rk(); CK(cudaStreamSynchronize(st));
      cudaGraph_t gr; cudaGraphExec_t ex;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      for (int c = 0; c < 5; ++c) rk();
      CK(cudaStreamEndCapture(st, &gr)); CK(cudaGraphInstantiate(&ex, gr, 0));
      for (int r = 0; r < 30; ++r) CK(cudaGraphLaunch(ex, st));
      CK(cudaStreamSynchronize(st)); CK(cudaGraphExecDestroy(ex)); CK(cudaGraphDestroy(gr));
      CK(cudaFree(buf)); CK(cudaFree(sink));
    } else if (!strcmp(argv[i], "N")) {  // run nvidia-smi (nvfp4_bench asks it for the driver version before timing)
      if (system("nvidia-smi --query-gpu=driver_version --format=csv,noheader > /dev/null 2>&1") != 0) printf("nvidia-smi failed\n");
    } else if (!strcmp(argv[i], "L")) {  // one kernel on the legacy default stream, then a device sync
      spin_kernel<<<1, 1>>>(1000); CK(cudaDeviceSynchronize());
    } else if (!strcmp(argv[i], "D")) {
      for (auto ex : graphs) CK(cudaGraphExecDestroy(ex));
      graphs.clear();
    } else if (!strcmp(argv[i], "t")) {
      cudaGraphExec_t ex = graphs.back();
      auto timed = [&](bool pre) { if (pre) spin_kernel<<<1, 1, 0, st>>>(spin); cudaEventRecord(e0, st); cudaGraphLaunch(ex, st);
                                   cudaEventRecord(e1, st); cudaEventSynchronize(e1); float t = 0; cudaEventElapsedTime(&t, e0, e1); return t; };
      timed(false);
      const int warm = std::min(10000, (int)((first_t ? warm_first_ms : 30.0) / timed(false)));
      first_t = false;
      for (int r = 0; r < warm; ++r) CK(cudaGraphLaunch(ex, st));
      CK(cudaStreamSynchronize(st));
      printf("    t: each");
      double best = 1e30;
      if (settle) {
        for (int r = 0, since = 0; r < 100 && since < 5; ++r) { double us = timed(true) * 1000.0 / calls;
          since = us < best * 0.995 ? 0 : since + 1; best = std::min(best, us); }
        printf(" (settled)");
      } else
      for (int r = 0; r < 5; ++r) { double us = timed(true) * 1000.0 / calls; best = std::min(best, us); printf(" %.2f", us); }
      printf("  best %.2f us (warm %d)\n", best, warm);
    }
  }
  CK(cudaGetLastError());
  return 0;
}
"""

args = sys.argv[1:]
if args and args[0] == "--cxx":  # the same sequence as a compiled program
    with open("/tmp/gap_probe_main.cu", "w") as f:
        f.write(bench_fill_source() +
                "__global__ void spin_kernel(long long c) { long long t = clock64(); while (clock64() - t < c) {} }\n"
                "__global__ void read_kernel(const float4* p, size_t n, float* sink) { float acc = 0.f;\n"
                "  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {\n"
                "    const float4 v = p[i]; acc += v.x + v.y + v.z + v.w; }\n  if (acc == 123456.789f) *sink = acc; }\n"
                + CXX_MAIN)
    lib = os.environ["NVFP4_LIBRARY"]
    subprocess.run(["nvcc", "-O2", "-std=c++17", "-arch=sm_90a", "-Icpp/include", "-o", "/tmp/gap_probe_cxx",
                    "/tmp/gap_probe_main.cu", lib, f"-Xlinker=-rpath,{os.path.dirname(lib)}"], check=True)
    sys.exit(subprocess.run(["/tmp/gap_probe_cxx", *args[1:]]).returncode)
flags = {"spin": 1, "yield": 2, "blocking": 4}.get(os.environ.get("GAP_PROBE_SCHEDULE", ""))
cudart_path = (glob.glob("/usr/local/cuda/lib64/libcudart.so.13*") or ["libcudart.so.13"])[0]
if args and args[0] == "--import-torch":
    import torch  # noqa: F401  (imported, never used: does the import alone change the timings?)
    args = args[1:]
    cudart_path = "libcudart.so.13"  # the copy torch loaded
cudart = ctypes.CDLL(cudart_path)
vp = ctypes.c_void_p
fl = fill_library("/tmp/gap_probe.so")
if flags:
    ck(cudart.cudaSetDeviceFlags(flags), "cudaSetDeviceFlags")

libpath = os.environ.get("NVFP4_LIBRARY") or subprocess.run(
    [sys.executable, "-c", "import nvfp4._lib as l; print(l.library_path())"], capture_output=True, text=True,
    cwd="/tmp").stdout.strip()
lib = ctypes.CDLL(libpath)
i64 = ctypes.c_int64
lib.nvfp4_quantize_activations.argtypes = [vp, ctypes.c_int, i64, i64, i64, vp, vp, vp, vp, vp, vp, vp]
lib.nvfp4_sm90_gemm.argtypes = [vp, i64, i64, i64, i64, vp, vp, vp, ctypes.c_int, vp, vp, ctypes.c_int, i64,
                                ctypes.c_int, vp, ctypes.c_size_t, vp]
lib.nvfp4_sm90_gemm_workspace_size.argtypes = [i64, i64, i64, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]


def cmalloc(nbytes):
    p = vp()
    ck(cudart.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(max(1, nbytes))), "cudaMalloc")
    return p.value


n, k, m = 6144, 4096, 1
wbytes = n * k // 2 + n * k // 16
copies = min(64, max(1, -(-(200 << 20) // wbytes)))
calls = max(20, copies)
sbytes = ((n + 127) // 128 * 128) * ((k // 16 + 3) // 4 * 4)
pairs = []
for c in range(copies):
    w, sc = cmalloc(n * k // 2), cmalloc(sbytes)
    fl.fill_bytes(w, n * k // 2, 1000 + c)
    ck(cudart.cudaMemset(vp(sc), 0, ctypes.c_size_t(sbytes)), "memset")
    fl.fill_scales(sc, n, k // 16, 2000 + c)
    pairs.append((w, sc))
bias, x, act, alpha, out = cmalloc(n * 2), cmalloc(m * k * 2), cmalloc(m * k * 2), cmalloc(m * 4), cmalloc(m * n * 2)
ck(cudart.cudaMemset(vp(bias), 0, ctypes.c_size_t(n * 2)), "memset")
fl.fill_act(x, m, k, 5000 + m)
wgs = cmalloc(4)
ck(cudart.cudaMemcpy(vp(wgs), ctypes.byref(ctypes.c_float(0.75)), ctypes.c_size_t(4), 1), "memcpy")
ck(lib.nvfp4_quantize_activations(x, 0, m, k, k, None, alpha, wgs, None, None, act, None), "quantize")
size = ctypes.c_size_t(0)
ck(lib.nvfp4_sm90_gemm_workspace_size(m, n, k, 1, ctypes.byref(size)), "ws size")
wsb = size.value
ws = cmalloc(wsb)
stream = vp()
ck(cudart.cudaStreamCreateWithFlags(ctypes.byref(stream), 1), "stream")
ev = [vp() for _ in range(2)]
for e in ev:
    ck(cudart.cudaEventCreate(ctypes.byref(e)), "event")
ck(cudart.cudaDeviceSynchronize(), "sync")
ms = ctypes.c_float()


def timed(pre=None):
    if pre:
        pre()
    ck(cudart.cudaEventRecord(ev[0], stream), "record")
    ck(cudart.cudaGraphLaunch(graphs[-1], stream), "launch")
    ck(cudart.cudaEventRecord(ev[1], stream), "record")
    ck(cudart.cudaEventSynchronize(ev[1]), "sync")
    ck(cudart.cudaEventElapsedTime(ctypes.byref(ms), ev[0], ev[1]), "elapsed")
    return ms.value


# busy-wait cycles per microsecond
fl.spin(2_000_000, stream)
ck(cudart.cudaEventRecord(ev[0], stream), "record")
fl.spin(2_000_000, stream)
ck(cudart.cudaEventRecord(ev[1], stream), "record")
ck(cudart.cudaEventSynchronize(ev[1]), "sync")
ck(cudart.cudaEventElapsedTime(ctypes.byref(ms), ev[0], ev[1]), "elapsed")
spin_cycles = int(200 * 2_000_000 / (ms.value * 1000))

graphs, graph_handles = [], []
out_lines = []
for step in args:
    if step == "cap":
        ck(cudart.cudaStreamBeginCapture(stream, 1), "begin capture")
        for i in range(calls):
            w, sc = pairs[i % copies]
            ck(lib.nvfp4_sm90_gemm(act, k, m, n, k, w, sc, alpha, 1, bias, out, 0, n, 1, ws, wsb, stream), "gemm")
        g, ex = vp(), vp()
        ck(cudart.cudaStreamEndCapture(stream, ctypes.byref(g)), "end capture")
        ck(cudart.cudaGraphInstantiate(ctypes.byref(ex), g, ctypes.c_ulonglong(0)), "instantiate")
        graphs.append(ex)
        graph_handles.append(g)
    elif step == "D":  # destroy every graph (as nvfp4_bench does after each measurement)
        for g, ex in zip(graph_handles, graphs):
            ck(cudart.cudaGraphExecDestroy(ex), "exec destroy")
            ck(cudart.cudaGraphDestroy(g), "destroy")
        graph_handles.clear()
        graphs.clear()
    elif step == "M":  # one cudaMalloc + cudaFree (nvfp4_bench allocates and frees buffers per M)
        ck(cudart.cudaFree(vp(cmalloc(64 << 20))), "cudaFree")
    elif step == "S":  # a 4-byte device-to-host copy and a stream sync (nvfp4_bench's invariance probe)
        host = ctypes.c_float()
        ck(cudart.cudaMemcpyAsync(ctypes.byref(host), vp(out), ctypes.c_size_t(4), 2, stream), "memcpy")
        ck(cudart.cudaStreamSynchronize(stream), "sync")
    elif step == "t":
        timed()
        warm = min(1000, int(30 / timed()))
        for _ in range(warm):
            ck(cudart.cudaGraphLaunch(graphs[-1], stream), "launch")
        ck(cudart.cudaStreamSynchronize(stream), "sync")
        each = [round(timed(lambda: fl.spin(spin_cycles, stream)) * 1000 / calls, 2) for _ in range(5)]
        out_lines.append(f"    t (step {len(out_lines)}): best {min(each):.2f} us  each {each}  (warm {warm})")
    else:
        raise ValueError(step)
print(f"gap_probe {' '.join(sys.argv[1:])}  (N={n} K={k} M={m}, {copies} copies, {calls} calls, cudart {cudart_path})")
print("\n".join(out_lines), flush=True)
