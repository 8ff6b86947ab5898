"""Diagnostic (device only): is the ~1 us that compare.py adds over nvfp4_bench on small split-K sm90 GEMMs caused by
the per-call torch allocations of the output and the split-K workspace? Times the same kernels through ctypes with
pre-allocated and freshly allocated buffers, and through nvfp4.ops."""
import ctypes, sys, torch
sys.path.insert(0, "bench"); sys.path.insert(0, "tests")
from timing import copies_for, graph_time_us
from gpu_data import random_layer, random_rows
from nvfp4 import _lib, ops

lib = _lib.require()
REPLAYS = 40
for (n, k, m) in [(4096, 4096, 1), (4096, 4096, 16), (2112, 7168, 4), (32768, 512, 4)]:
    copies = copies_for(n * k // 2 + n * k // 16, cap=64)
    layers = [random_layer(n, k, seed=c) for c in range(copies)]
    x = random_rows(m, k, seed=m)
    act, alpha = ops.quantize_activations_dequant_impl(x, None, layers[0].weight_scale_2.reshape(1))
    size = ctypes.c_size_t(0)
    lib.nvfp4_sm90_gemm_workspace_size(m, n, k, 1, ctypes.byref(size))
    wsb = size.value
    ws_fixed = torch.empty(max(1, wsb), dtype=torch.uint8, device="cuda")
    out_fixed = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")

    def launch(L, o, w):
        lib.nvfp4_sm90_gemm(act.data_ptr(), act.stride(0), m, n, k, L.weight.data_ptr(), L.weight_scale_swizzled.data_ptr(),
                            alpha.data_ptr(), int(alpha.numel() != 1), L.bias.data_ptr(), o.data_ptr(), 0, n, 1,
                            w.data_ptr() if wsb else None, wsb, torch.cuda.current_stream().cuda_stream)
        return o

    def combined(L):
        buf = torch.empty(wsb + m * n * 2, dtype=torch.uint8, device="cuda")
        return launch(L, buf[wsb:].view(torch.bfloat16).view(m, n), buf[:max(1, wsb)])

    variants = {
        "ops path (fresh out + ws)": lambda L: ops.mm_sm90_impl(act, L.weight, L.weight_scale_swizzled, alpha, L.bias, torch.bfloat16, True),
        "ctypes, fixed out + ws": lambda L: launch(L, out_fixed, ws_fixed),
        "ctypes, fresh out, fixed ws": lambda L: launch(L, torch.empty(m, n, dtype=torch.bfloat16, device="cuda"), ws_fixed),
        "ctypes, fixed out, fresh ws": lambda L: launch(L, out_fixed, torch.empty(max(1, wsb), dtype=torch.uint8, device="cuda")),
        "ctypes, one fresh buffer": combined,
    }
    calls = max(20, copies)
    print(f"N={n} K={k} M={m} copies={copies} calls={calls} workspace={wsb}", flush=True)
    for rep in range(2):
        for name, f in variants.items():
            t = graph_time_us(lambda i, f=f: (lambda: f(layers[i])), copies, calls, REPLAYS)
            print(f"   pass {rep}  {name:<30} {t:7.2f} us", flush=True)
