"""Diagnostic (device only): compare.py times some small split-K sm90 GEMMs ~0.5-1 us slower than nvfp4_bench although
both launch the same kernels. Same call (ctypes, fixed output and workspace), different placement of the weight
copies in memory: NvFp4Linear layers (weight, linear scales, swizzled scales, bias... per layer), C++-like pairs
(codes, swizzled scales) allocated alternately, and all codes first then all scales."""
import ctypes, sys, torch
sys.path.insert(0, "bench"); sys.path.insert(0, "tests")
from timing import copies_for, graph_time_us
from gpu_data import random_layer, random_rows
from nvfp4 import _lib, ops

lib = _lib.require()
REPLAYS = 40
for (n, k, m) in [(2112, 7168, 4), (4096, 4096, 16), (4096, 4096, 1)]:
    copies = copies_for(n * k // 2 + n * k // 16, cap=64)
    layers = [random_layer(n, k, seed=c) for c in range(copies)]
    x = random_rows(m, k, seed=m)
    act, alpha = ops.quantize_activations_dequant_impl(x, None, layers[0].weight_scale_2.reshape(1))
    size = ctypes.c_size_t(0)
    lib.nvfp4_sm90_gemm_workspace_size(m, n, k, 1, ctypes.byref(size))
    wsb = size.value
    ws = torch.empty(max(1, wsb), dtype=torch.uint8, device="cuda")
    out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
    bias = layers[0].bias

    def launch(w, s):
        lib.nvfp4_sm90_gemm(act.data_ptr(), act.stride(0), m, n, k, w.data_ptr(), s.data_ptr(), alpha.data_ptr(),
                            int(alpha.numel() != 1), bias.data_ptr(), out.data_ptr(), 0, n, 1,
                            ws.data_ptr() if wsb else None, wsb, torch.cuda.current_stream().cuda_stream)

    placements = {"NvFp4Linear layers": [(L.weight, L.weight_scale_swizzled) for L in layers]}
    pairs = []
    for L in layers:  # alternate allocations, as nvfp4_bench does
        w = torch.empty_like(L.weight); w.copy_(L.weight)
        s = torch.empty_like(L.weight_scale_swizzled); s.copy_(L.weight_scale_swizzled)
        pairs.append((w, s))
    placements["alternating codes/scales"] = pairs
    ws_all = [torch.empty_like(L.weight).copy_(L.weight) for L in layers]
    ss_all = [torch.empty_like(L.weight_scale_swizzled).copy_(L.weight_scale_swizzled) for L in layers]
    placements["all codes, then all scales"] = list(zip(ws_all, ss_all))
    calls = max(20, copies)
    print(f"N={n} K={k} M={m} copies={copies} calls={calls}", flush=True)
    for rep in range(2):
        for name, bufs in placements.items():
            t = graph_time_us(lambda i, b=bufs: (lambda: launch(*b[i])), copies, calls, REPLAYS)
            print(f"   pass {rep}  {name:<28} {t:7.2f} us", flush=True)
    del layers, placements, pairs, ws_all, ss_all
    torch.cuda.empty_cache()
