"""Why does compare.py time the sm90 GEMM ~1 us slower than nvfp4_bench? (diagnostic, device only)"""
import math, sys, torch
sys.path.insert(0, "bench"); sys.path.insert(0, "tests")
import timing
from timing import copies_for
from gpu_data import random_layer, random_rows
from nvfp4 import ops


def graph_time(make_call, copies, calls, replays=5, side_stream=False):
    fns = [make_call(i) for i in range(copies)]
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns: f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls): fns[i % copies]()
    run = torch.cuda.Stream() if side_stream else torch.cuda.current_stream()
    run.wait_stream(torch.cuda.current_stream())
    best = math.inf
    cyc = int(timing.SPIN_US * timing._cycles_per_us())
    with torch.cuda.stream(run):
        g.replay(); torch.cuda.synchronize()
        st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(replays):
            torch.cuda._sleep(cyc); st.record(); g.replay(); en.record(); en.synchronize()
            best = min(best, st.elapsed_time(en) * 1000 / calls)
    return best


for (n, k, m) in [(4096, 4096, 1), (6144, 4096, 16)]:
    copies = copies_for(n * k // 2 + n * k // 16, cap=64)
    layers = [random_layer(n, k, seed=c) for c in range(copies)]
    x = random_rows(m, k, seed=m)
    act, alpha = ops.quantize_activations_dequant_impl(x, None, layers[0].weight_scale_2.reshape(1))
    op = lambda L: ops.mm_sm90_impl(act, L.weight, L.weight_scale_swizzled, alpha, L.bias, torch.bfloat16, True)
    print(f"N={n} K={k} M={m} copies={copies}")
    for calls in (copies, 4 * copies):
        for side in (False, True):
            t = graph_time(lambda i: (lambda: op(layers[i])), copies, calls, side_stream=side)
            print(f"    calls={calls:4d} {'side stream   ' if side else 'default stream'} {t:.2f} us", flush=True)
