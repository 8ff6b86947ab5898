"""Diagnostic (device only, issue 6): compare.py times the small split-K sm90 GEMMs ~1 us per call slower than
nvfp4_bench, although both launch the same kernels from the same library. The split path is two kernels per call,
the reduction launched with programmatic dependent launch (PDL). This times the same calls three ways, in rounds:

  torch-ops    the harness's way: torch.cuda.CUDAGraph over nvfp4.ops.mm_sm90_impl (fresh output and workspace)
  torch-fixed  torch.cuda.CUDAGraph over a direct ctypes call with fixed output and workspace
  raw-fixed    the same ctypes call captured and replayed through libcudart directly (what nvfp4_bench does)

and prints the SM clock (NVML) after each, then a CUPTI timeline (torch.profiler) of one replay of each graph kind:
mean kernel durations and the mean gap between consecutive kernels. Output: one JSON line per measurement.

`python tools/timing_probe.py preroll` instead times one raw graph per shape with different things in front of the
start event: a one-thread busy-wait of 0..2000 us (what both harnesses do, 200 us), a busy-wait on every SM, a bf16
matmul, and R back-to-back replays between the events.

`python tools/timing_probe.py placement` times the same GEMM with its buffers from torch's allocator or from one
cudaMalloc each (as nvfp4_bench), and with random_layer's data or nvfp4_bench's own fill kernels (compiled from
bench/cpp/nvfp4_bench.cu with nvcc), to separate memory placement from data."""
import ctypes
import json
import math
import subprocess
import sys

import torch

sys.path.insert(0, "bench")
sys.path.insert(0, "tests")
from gpu_data import random_layer, random_rows  # noqa: E402
from timing import WARM_MS, SPIN_US, _cycles_per_us, capture_calls, copies_for, graph_time_us  # noqa: E402

from nvfp4 import _lib, ops  # noqa: E402

sys.path.insert(0, "tools")
from probe_common import ck, fill_library  # noqa: E402

cudart = ctypes.CDLL("libcudart.so.13")  # already loaded by torch; dlopen finds it by soname
try:
    import pynvml

    pynvml.nvmlInit()
    _nvml = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())

    def sm_clock() -> int:
        return pynvml.nvmlDeviceGetClockInfo(_nvml, pynvml.NVML_CLOCK_SM)

    def gpu_state() -> dict:
        st = {}
        for key, fn in (("sm_MHz", lambda: pynvml.nvmlDeviceGetClockInfo(_nvml, pynvml.NVML_CLOCK_SM)),
                        ("mem_MHz", lambda: pynvml.nvmlDeviceGetClockInfo(_nvml, pynvml.NVML_CLOCK_MEM)),
                        ("pstate", lambda: pynvml.nvmlDeviceGetPerformanceState(_nvml)),
                        ("power_mW", lambda: pynvml.nvmlDeviceGetPowerUsage(_nvml)),
                        ("temp_C", lambda: pynvml.nvmlDeviceGetTemperature(_nvml, pynvml.NVML_TEMPERATURE_GPU)),
                        ("reasons", lambda: hex(pynvml.nvmlDeviceGetCurrentClocksEventReasons(_nvml)))):
            try:
                st[key] = fn()
            except Exception as exc:  # noqa: BLE001
                st[key] = type(exc).__name__
        return st
except Exception:  # noqa: BLE001
    def sm_clock() -> int:
        return -1

    def gpu_state() -> dict:
        return {}




def raw_graph_time_us(fns, copies, calls, replays=5, keep=False):
    """graph_time_us with capture, instantiation and launch through libcudart instead of torch.cuda.CUDAGraph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    h = ctypes.c_void_p(s.cuda_stream)
    with torch.cuda.stream(s):
        for f in fns:
            f()
        ck(cudart.cudaStreamBeginCapture(h, 1), "begin capture")  # thread-local mode
        for i in range(calls):
            fns[i % copies]()
        g = ctypes.c_void_p()
        ck(cudart.cudaStreamEndCapture(h, ctypes.byref(g)), "end capture")
        ex = ctypes.c_void_p()
        ck(cudart.cudaGraphInstantiate(ctypes.byref(ex), g, ctypes.c_ulonglong(0)), "instantiate")
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        ck(cudart.cudaGraphLaunch(ex, h), "launch")
        end.record()
        end.synchronize()
        for _ in range(min(1000, int(WARM_MS / max(start.elapsed_time(end), 1e-3)))):
            ck(cudart.cudaGraphLaunch(ex, h), "launch")
        torch.cuda.synchronize()
        spin = int(SPIN_US * _cycles_per_us())
        best = math.inf
        for _ in range(replays):
            torch.cuda._sleep(spin)
            start.record()
            ck(cudart.cudaGraphLaunch(ex, h), "launch")
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) * 1000 / calls)
    if keep:
        return best, (ex, h, g)
    ck(cudart.cudaGraphExecDestroy(ex), "exec destroy")
    ck(cudart.cudaGraphDestroy(g), "destroy")
    return best


def graph_node_counts(g):
    n = ctypes.c_size_t(0)
    ck(cudart.cudaGraphGetNodes(g, None, ctypes.byref(n)), "get nodes")
    e = ctypes.c_size_t(0)
    ck(cudart.cudaGraphGetEdges(g, None, None, None, ctypes.byref(e)), "get edges")  # CUDA 13 signature (edge data)
    return n.value, e.value


def timeline(replay, label, calls):
    """CUPTI kernel records of one replay: mean duration per kernel name, mean gap between consecutive kernels."""
    from torch.profiler import ProfilerActivity, profile

    replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        replay()
        torch.cuda.synchronize()
    evs = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                  and "sleep" not in e.name and "spin" not in e.name), key=lambda e: e.time_range.start)
    by_name = {}
    for e in evs:
        by_name.setdefault(e.name[:60], []).append(e.time_range.elapsed_us())
    gaps = [b.time_range.start - a.time_range.end for a, b in zip(evs, evs[1:])]
    short = lambda e: "reduce" if "reduce" in e.name else "gemm"  # noqa: E731
    by_edge = {}
    for a, b in zip(evs, evs[1:]):
        by_edge.setdefault(f"{short(a)}->{short(b)}", []).append(b.time_range.start - a.time_range.end)
    span = (evs[-1].time_range.end - evs[0].time_range.start) if evs else 0
    print(json.dumps({"timeline": label, "kernels": len(evs), "span_per_call_us": round(span / calls, 3),
                      "mean_gap_us": round(sum(gaps) / max(1, len(gaps)), 3),
                      "mean_gap_by_edge_us": {e: round(sum(v) / len(v), 3) for e, v in by_edge.items()},
                      "by_kernel_us": {k: round(sum(v) / len(v), 3) for k, v in by_name.items()}}), flush=True)


class FixedGemm:
    """One sm90 GEMM with fixed buffers (torch allocations): `copies` NvFp4Linear weight copies (L2 rotation as the
    harnesses), one quantized activation, output and workspace; launch(c, stream) calls the C ABI directly."""

    def __init__(self, n: int, k: int, m: int):
        self.lib = _lib.require()
        self.n, self.k, self.m = n, k, m
        self.copies = copies_for(n * k // 2 + n * k // 16, cap=64)
        self.calls = max(20, self.copies)
        self.layers = [random_layer(n, k, seed=c) for c in range(self.copies)]
        x = random_rows(m, k, seed=m)
        self.act, self.alpha = ops.quantize_activations_dequant_impl(x, None,
                                                                     self.layers[0].weight_scale_2.reshape(1))
        size = ctypes.c_size_t(0)
        self.lib.nvfp4_sm90_gemm_workspace_size(m, n, k, 1, ctypes.byref(size))
        self.wsb = size.value
        self.ws = torch.empty(max(1, self.wsb), dtype=torch.uint8, device="cuda")
        self.out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")

    def launch(self, c: int, stream=None):
        L = self.layers[c]
        rc = self.lib.nvfp4_sm90_gemm(
            self.act.data_ptr(), self.act.stride(0), self.m, self.n, self.k, L.weight.data_ptr(),
            L.weight_scale_swizzled.data_ptr(), self.alpha.data_ptr(), 1, L.bias.data_ptr(), self.out.data_ptr(), 0,
            self.n, 1, self.ws.data_ptr() if self.wsb else None, self.wsb,
            stream if stream is not None else torch.cuda.current_stream().cuda_stream)
        assert rc == 0, rc

    def fns(self):
        """One zero-argument launch per weight copy, on the current stream."""
        return [lambda c=c: self.launch(c) for c in range(self.copies)]


def how_three_ways():
    for (n, k, m) in [(6144, 4096, 1), (6144, 4096, 4), (2112, 7168, 4), (4096, 4096, 1), (6144, 4096, 128)]:
        gm = FixedGemm(n, k, m)
        copies, calls, layers, act, alpha, wsb = gm.copies, gm.calls, gm.layers, gm.act, gm.alpha, gm.wsb
        ops_fns = [lambda L=L: ops.mm_sm90_impl(act, L.weight, L.weight_scale_swizzled, alpha, L.bias, torch.bfloat16,
                                                True) for L in layers]
        fixed_fns = gm.fns()
        base = {"N": n, "K": k, "M": m, "copies": copies, "calls": calls, "split_workspace_bytes": wsb}
        for rnd in range(3):
            for name, fn in (("torch-ops", lambda: graph_time_us(lambda i: ops_fns[i], copies, calls)),
                             ("torch-fixed", lambda: graph_time_us(lambda i: fixed_fns[i], copies, calls)),
                             ("raw-fixed", lambda: raw_graph_time_us(fixed_fns, copies, calls))):
                t = fn()
                print(json.dumps({**base, "round": rnd, "how": name, "us": round(t, 3), "sm_clock_MHz": sm_clock()}),
                      flush=True)
        # CUPTI timelines of one replay of each graph kind
        try:
            tg = torch.cuda.CUDAGraph(keep_graph=True)
        except TypeError:
            tg = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        capture_calls(fixed_fns, calls, s, tg)
        try:
            nodes = graph_node_counts(ctypes.c_void_p(tg.raw_cuda_graph()))
        except Exception as exc:  # noqa: BLE001
            nodes = str(exc)
        timeline(tg.replay, f"torch-fixed N={n} K={k} M={m} nodes,edges={nodes}", calls)
        _, (ex, h, g) = raw_graph_time_us(fixed_fns, copies, calls, keep=True)
        timeline(lambda: ck(cudart.cudaGraphLaunch(ex, h), "launch"),
                 f"raw-fixed N={n} K={k} M={m} nodes,edges={graph_node_counts(g)}", calls)
        del tg, gm, layers, ops_fns, fixed_fns
        torch.cuda.empty_cache()


def preroll_experiment():
    import cupy

    spin_all = cupy.RawKernel(r"""extern "C" __global__ void spin_all(long long cycles) {
        long long t0 = clock64(); while (clock64() - t0 < cycles) {} }""", "spin_all")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    for (n, k, m) in [(6144, 4096, 1), (4096, 4096, 1), (6144, 4096, 128)]:
        gm = FixedGemm(n, k, m)
        copies, calls, layers, fns = gm.copies, gm.calls, gm.layers, gm.fns()
        _, (ex, h, g) = raw_graph_time_us(fns, copies, calls, keep=True)
        cyc = _cycles_per_us()
        s = torch.cuda.ExternalStream(h.value)

        def one_spin(us):
            return lambda: torch.cuda._sleep(int(us * cyc)) if us else None

        def all_spin(us):
            def f():
                with cupy.cuda.ExternalStream(h.value):
                    spin_all((sms * 2,), (128,), (cupy.int64(int(us * cyc)),))
            return f

        def mm():
            torch.mm(a, a)

        prerolls = [(f"one-thread spin {us} us", one_spin(us), 1) for us in (0, 20, 50, 100, 200, 500, 2000)]
        prerolls += [(f"all-SM spin {us} us", all_spin(us), 1) for us in (50, 200)]
        prerolls += [("bf16 matmul 4096^3", mm, 1)]
        prerolls += [(f"one-thread spin 200 us, {r} replays between the events", one_spin(200), r) for r in (5, 20)]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(s):
            for _ in range(200):
                ck(cudart.cudaGraphLaunch(ex, h), "launch")
            for rnd in range(3):
                for name, pre, reps in prerolls:
                    best = math.inf
                    for _ in range(5):
                        pre()
                        start.record()
                        for _ in range(reps):
                            ck(cudart.cudaGraphLaunch(ex, h), "launch")
                        end.record()
                        end.synchronize()
                        best = min(best, start.elapsed_time(end) * 1000 / (calls * reps))
                    print(json.dumps({"N": n, "K": k, "M": m, "round": rnd, "preroll": name, "us": round(best, 3),
                                      "sm_clock_MHz": sm_clock()}), flush=True)
        ck(cudart.cudaGraphExecDestroy(ex), "exec destroy")
        del gm, layers, fns
        torch.cuda.empty_cache()


def placement_experiment():
    fl = fill_library()
    lib = _lib.require()

    def cmalloc(nbytes):
        p = ctypes.c_void_p()
        ck(cudart.cudaMalloc(ctypes.byref(p), ctypes.c_size_t(max(1, nbytes))), "cudaMalloc")
        return p.value

    def to_raw(t):
        p = cmalloc(t.numel() * t.element_size())
        ck(cudart.cudaMemcpy(ctypes.c_void_p(p), ctypes.c_void_p(t.data_ptr()), ctypes.c_size_t(t.numel() * t.element_size()), 3), "memcpy")
        return p

    for (n, k, m) in [(6144, 4096, 1), (4096, 4096, 1)]:
        copies = copies_for(n * k // 2 + n * k // 16, cap=64)
        calls = max(20, copies)
        sbytes = ((n + 127) // 128 * 128) * ((k // 16 + 3) // 4 * 4)
        size = ctypes.c_size_t(0)
        lib.nvfp4_sm90_gemm_workspace_size(m, n, k, 1, ctypes.byref(size))
        wsb = size.value
        wgs = torch.full((1,), 0.75, device="cuda")

        def cpp_data(raw: bool):
            """nvfp4_bench's buffers: codes, swizzled scales, bias, x -> quantized act + alpha, out, workspace."""
            alloc = cmalloc if raw else (lambda nb: torch.empty(max(1, nb), dtype=torch.uint8, device="cuda"))
            keep = []

            def buf(nb):
                b = alloc(nb)
                keep.append(b)
                return b if raw else b.data_ptr()
            ws_pairs = []
            for c in range(copies):
                w, sc = buf(n * k // 2), buf(sbytes)
                fl.fill_bytes(w, n * k // 2, 1000 + c)
                cudart.cudaMemset(ctypes.c_void_p(sc), 0, ctypes.c_size_t(sbytes))
                fl.fill_scales(sc, n, k // 16, 2000 + c)
                ws_pairs.append((w, sc))
            bias = buf(n * 2)
            fl.fill_bf16(bias, n, 3000, 1.0)
            x, act, alpha, out, ws = buf(m * k * 2), buf(m * k * 2), buf(m * 4), buf(m * n * 2), buf(wsb)
            fl.fill_act(x, m, k, 5000 + m)
            torch.cuda.synchronize()
            rc = lib.nvfp4_quantize_activations(x, 0, m, k, k, None, alpha, wgs.data_ptr(), None, None, act, None)
            assert rc == 0, rc
            torch.cuda.synchronize()
            return dict(pairs=ws_pairs, bias=bias, act=act, alpha=alpha, out=out, ws=ws, keep=keep)

        def torch_data(raw: bool):
            layers = [random_layer(n, k, seed=c) for c in range(copies)]
            x = random_rows(m, k, seed=m)
            act, alpha = ops.quantize_activations_dequant_impl(x, None, layers[0].weight_scale_2.reshape(1))
            out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
            ws = torch.empty(max(1, wsb), dtype=torch.uint8, device="cuda")
            tensors = dict(pairs=[(L.weight, L.weight_scale_swizzled) for L in layers], bias=layers[0].bias, act=act,
                           alpha=alpha, out=out, ws=ws)
            if not raw:
                d = {key: (v.data_ptr() if torch.is_tensor(v) else [(a.data_ptr(), b.data_ptr()) for a, b in v])
                     for key, v in tensors.items()}
                d["keep"] = [tensors, layers]
                return d
            d = {key: (to_raw(v) if torch.is_tensor(v) else [(to_raw(a), to_raw(b)) for a, b in v])
                 for key, v in tensors.items()}
            d["keep"] = []
            torch.cuda.synchronize()
            return d

        def time_it(d):
            def launch(c):
                w, sc = d["pairs"][c]
                rc = lib.nvfp4_sm90_gemm(d["act"], k, m, n, k, w, sc, d["alpha"], 1, d["bias"], d["out"], 0, n, 1,
                                         d["ws"] if wsb else None, wsb, torch.cuda.current_stream().cuda_stream)
                assert rc == 0, rc
            return raw_graph_time_us([lambda c=c: launch(c) for c in range(copies)], copies, calls)

        variants = [("C++ data, cudaMalloc buffers", lambda: cpp_data(True)),
                    ("C++ data, torch buffers", lambda: cpp_data(False)),
                    ("random_layer data, torch buffers", lambda: torch_data(False)),
                    ("random_layer data, cudaMalloc buffers", lambda: torch_data(True))]
        built = {}
        for name, make in variants:
            built[name] = make()
        for rnd in range(3):
            for name, _ in variants:
                print(json.dumps({"N": n, "K": k, "M": m, "round": rnd, "data, buffers": name,
                                  "us": round(time_it(built[name]), 3)}), flush=True)
        for d in built.values():  # the raw buffers are left to the process exit
            d.pop("keep")
        built.clear()
        torch.cuda.empty_cache()


def sequence_experiment(recipe: str):
    """One GEMM (N=6144 K=4096 M=1, fixed buffers), steps in order: 'cal' calibrates the busy-wait, 'cap' captures a
    new raw graph (the one later steps time), 't' times the current graph (warm-up, busy-wait, best of 5),
    'd' destroys every graph but the current one, 'idleS' idles the host S seconds, 'sync' = cudaDeviceSynchronize,
    'tb', 'tc', 'td', 'te', 'tr' are variants of 't' in nvfp4_bench's order (busy-wait, start, graph, end): with our
    own busy-wait kernel, with libcudart events, without busy-wait, with torch's busy-wait and events, and through
    libcudart alone (no torch call, no busy-wait); 'sl' runs the two 2M-cycle busy-waits of a calibration, 'wX' sets the warm-up to X ms of replays (counted from
    the second launch's time) for the next 't' steps."""
    import time

    gm = FixedGemm(6144, 4096, 1)
    copies, calls = gm.copies, gm.calls
    stream = torch.cuda.Stream()
    h = ctypes.c_void_p(stream.cuda_stream)
    torch.cuda.synchronize()

    graphs = []
    start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    results = []
    warm_ms = WARM_MS
    own_spin = None
    for step in recipe.split():
        t0 = time.time()
        if step == "cal":
            with torch.cuda.stream(stream):
                _cycles_per_us()
        elif step == "cap":
            with torch.cuda.stream(stream):
                ck(cudart.cudaStreamBeginCapture(h, 1), "begin capture")
                for i in range(calls):
                    gm.launch(i % copies, stream.cuda_stream)
                g = ctypes.c_void_p()
                ck(cudart.cudaStreamEndCapture(h, ctypes.byref(g)), "end capture")
                ex = ctypes.c_void_p()
                ck(cudart.cudaGraphInstantiate(ctypes.byref(ex), g, ctypes.c_ulonglong(0)), "instantiate")
            graphs.append((g, ex))
        elif step == "d":
            for g, ex in graphs[:-1]:
                ck(cudart.cudaGraphExecDestroy(ex), "exec destroy")
                ck(cudart.cudaGraphDestroy(g), "destroy")
            graphs = graphs[-1:]
        elif step.startswith("idle"):
            time.sleep(float(step[4:]))
        elif step == "sl":  # the GPU work of a calibration, without its caching
            with torch.cuda.stream(stream):
                torch.cuda._sleep(2_000_000)
                torch.cuda._sleep(2_000_000)
                stream.synchronize()
        elif step == "prof":
            ex = graphs[-1][1]
            with torch.cuda.stream(stream):
                timeline(lambda: ck(cudart.cudaGraphLaunch(ex, h), "launch"), f"step {len(results)}", calls)
        elif step == "sync":
            torch.cuda.synchronize()
        elif step.startswith("w"):
            warm_ms = float(step[1:])
        elif step == "t":
            ex = graphs[-1][1]
            with torch.cuda.stream(stream):
                launch_ms = []
                for _ in range(2):  # the first launch of a graph also uploads it
                    start.record()
                    ck(cudart.cudaGraphLaunch(ex, h), "launch")
                    end.record()
                    end.synchronize()
                    launch_ms.append(start.elapsed_time(end))
                warm = min(1000, int(warm_ms / launch_ms[1]))
                for _ in range(warm):
                    ck(cudart.cudaGraphLaunch(ex, h), "launch")
                stream.synchronize()
                spin = int(SPIN_US * _cycles_per_us())
                best, mhz, each = math.inf, [], []
                for _ in range(5):
                    start.record()
                    torch.cuda._sleep(spin)
                    mid.record()
                    ck(cudart.cudaGraphLaunch(ex, h), "launch")
                    end.record()
                    end.synchronize()
                    each.append(round(mid.elapsed_time(end) * 1000 / calls, 2))
                    mhz.append(spin / (start.elapsed_time(mid) * 1000))
            results.append({"step": step, "us": min(each), "each": each, **gpu_state(), "warm_replays": warm,
                            "launch_ms": [round(v, 3) for v in launch_ms], "busy_wait_MHz": round(max(mhz))})
        elif step in ("tb", "tc", "td", "te", "tr"):
            # C++ layout (busy-wait, start event, graph, end event); tb: our own busy-wait kernel (as nvfp4_bench's),
            # tc: libcudart events + torch's busy-wait, td: no busy-wait, te: torch events + torch's busy-wait,
            # tr: libcudart events and no busy-wait (no torch call at all)
            ex = graphs[-1][1]
            if step == "tb" and own_spin is None:
                # a module of its own: the busy-wait from probe_common.fill_library() gave erratic times here
                # (17-21 us instead of ~15.7 on the second 'tb', H100, 2026-11-24), this one did not
                open("/tmp/own_spin.cu", "w").write(
                    "__global__ void k(long long c) { long long t = clock64(); while (clock64() - t < c) {} }\n"
                    "extern \"C\" void own_spin(long long c, void* s) { k<<<1, 1, 0, (cudaStream_t)s>>>(c); }\n")
                subprocess.run(["nvcc", "-shared", "-Xcompiler", "-fPIC", "-arch=sm_90a", "-cudart", "shared", "-o",
                                "/tmp/own_spin.so", "/tmp/own_spin.cu"], check=True)
                own_spin = ctypes.CDLL("/tmp/own_spin.so").own_spin
                own_spin.argtypes = [ctypes.c_longlong, ctypes.c_void_p]
            raw_ev = [ctypes.c_void_p() for _ in range(2)]
            for e in raw_ev:
                ck(cudart.cudaEventCreate(ctypes.byref(e)), "event create")
            ms = ctypes.c_float()
            spin = int(SPIN_US * _cycles_per_us())

            def once(with_spin=True):
                if with_spin and step == "tb":
                    own_spin(spin, h)
                elif with_spin and step in ("tc", "te"):
                    with torch.cuda.stream(stream):
                        torch.cuda._sleep(spin)
                if step in ("tc", "tr"):
                    ck(cudart.cudaEventRecord(raw_ev[0], h), "record")
                    ck(cudart.cudaGraphLaunch(ex, h), "launch")
                    ck(cudart.cudaEventRecord(raw_ev[1], h), "record")
                    ck(cudart.cudaEventSynchronize(raw_ev[1]), "event sync")
                    ck(cudart.cudaEventElapsedTime(ctypes.byref(ms), raw_ev[0], raw_ev[1]), "elapsed")
                    return ms.value
                with torch.cuda.stream(stream):
                    start.record()
                    ck(cudart.cudaGraphLaunch(ex, h), "launch")
                    end.record()
                    end.synchronize()
                return start.elapsed_time(end)
            once(False)
            warm = min(1000, int(warm_ms / once(False)))
            for _ in range(warm):
                ck(cudart.cudaGraphLaunch(ex, h), "launch")
            ck(cudart.cudaStreamSynchronize(h), "stream sync")
            each = [round(once() * 1000 / calls, 2) for _ in range(5)]
            results.append({"step": step, "us": min(each), "each": each, "warm_replays": warm})
            for e in raw_ev:
                ck(cudart.cudaEventDestroy(e), "event destroy")
        else:
            raise ValueError(step)
    print(json.dumps({"recipe": recipe, "sm_clock_MHz": sm_clock()}), flush=True)
    for r in results:
        print("   ", json.dumps(r), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["sequence"]:
        sequence_experiment(" ".join(sys.argv[2:]))
        sys.exit(0)
    {"preroll": preroll_experiment, "placement": placement_experiment}.get(sys.argv[1] if sys.argv[1:] else "",
                                                                         how_three_ways)()
