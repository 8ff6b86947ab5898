"""Timing helpers and shape presets shared by bench/bench_hopper.py and bench/compare.py.

The method is the one nvfp4_bench (bench/cpp/nvfp4_bench.cu) uses, so the C++ and Python harnesses time the same
kernels the same way: one CUDA graph of `calls` back-to-back calls cycling over weight copies whose total size
exceeds L2 several times, replayed `replays` times, best per-call time kept. docs/benchmarks.md ("Findings behind the
current design") has the H100 measurements behind each rule below.

Before each timed replay a busy-wait kernel (SPIN_US long) is queued in front of the start event. Why: without it
the start event runs on an idle GPU as soon as it is queued, and the time the CPU then takes to submit the graph
(a few us in C++, 10-20 us through torch's CUDAGraph.replay) is counted as GPU time -- about 1 us per call at 20
calls, enough to make the two harnesses disagree by 5-12% on 10-20 us kernels. With the GPU busy until the graph is
queued, the events bracket the graph's execution only.

Before the timed replays the graph is replayed for WARM_MS of GPU time: after the host-side work between two
measurements (building inputs, capturing) the GPU has idled and its clocks are not yet back up; a 10-calls graph of a
10 us kernel lasts 0.1 ms, far less than the clocks take to ramp. nvfp4_bench does the same.

The first measurement after a shape's setup (new weight buffers, after seconds of prefill-sized work on the previous
shape) warms up for WARM_FIRST_MS instead (call new_shape() after the setup). Why: in that state the GPU runs the same
kernel 2-14% slower for longer than 30 ms of replays, so a shape's first row comes out slow (28672x4096 at M = 1:
55.2 vs 48.3 us for the same kernel measured twice; with 300 ms of warm-up, 48.1 vs 47.9 us).

The timed replays then go on until the best time has settled: `replays` replays in a row that do not lower it by more
than SETTLE (a fraction), at most MAX_REPLAYS, so a best is not taken while the time is still falling. On its own it
does not fix the slow first row of a shape (8192x28672 at M = 1: 100.9 vs 87.8 us for the same kernel measured
twice); the longer first warm-up above does.

Everything runs on one stream, timing_stream(): the harness's setup (run it under `with on_timing_stream():`), the
eager warm-up calls, the capture, the replays, the busy-wait and the events -- as nvfp4_bench does with its one
Timer stream. Why: the H100's gap between two dependent kernels of a replayed graph depends on which streams the
process has used. With the graph captured on a fresh pool stream per measurement and replayed on the default stream,
4096x4096 at M = 1 (two kernels per call) takes 10.55 us per call; with setup, capture and replay on one side stream,
9.84 us, against nvfp4_bench's 9.6 us.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

L2_FLUSH_BYTES = 200 << 20
# longer than any CPU-side submission of a graph replay; NVFP4_BENCH_SPIN_US=0 turns it off (nvfp4_bench reads it too)
SPIN_US = float(os.environ.get("NVFP4_BENCH_SPIN_US", "200"))
WARM_MS = float(os.environ.get("NVFP4_BENCH_WARM_MS", "30"))  # GPU time of untimed replays before timing
WARM_FIRST_MS = float(os.environ.get("NVFP4_BENCH_WARM_FIRST_MS", "300"))  # the same, first measurement of a shape
_fresh_shape = False


def new_shape() -> None:
    """The next graph_time_us is the first measurement after a shape's setup: it warms up for WARM_FIRST_MS."""
    global _fresh_shape
    _fresh_shape = True


SETTLE = 0.005  # a replay that lowers the best by less than this fraction does not count as an improvement
MAX_REPLAYS = 100


def settled_best(replay_us, replays: int) -> float:
    """Best of timed replays (`replay_us()` runs one and returns its per-call time), stopping once `replays` replays
    in a row have not improved the best by more than SETTLE (nvfp4_bench's Timer uses the same rule)."""
    best, since_improved = math.inf, 0
    for _ in range(MAX_REPLAYS):
        t = replay_us()
        since_improved = 0 if t < best * (1 - SETTLE) else since_improved + 1
        best = min(best, t)
        if since_improved >= replays:
            break
    return best


def _read_presets(path):
    """bench/presets.txt (also embedded into nvfp4_bench): shapes, the default M sweep and the --quick sweep."""
    shapes, sweeps = [], {}
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in ("m", "quick-m"):
            sweeps[words[0]] = [int(v) for v in words[1:]]
        elif len(words) == 4:
            shapes.append((words[0], words[1], int(words[2]), int(words[3])))
        else:
            raise ValueError(f"{path}: cannot read the line {line!r}")
    return shapes, sweeps["m"], sweeps["quick-m"]


PRESETS, M_VALUES, QUICK_M = _read_presets(Path(__file__).resolve().parent / "presets.txt")
PRESET_NAMES = sorted({p for p, *_ in PRESETS})
QUICK_SHAPES = PRESETS[:2]


def source_commit() -> str:
    """The commit the measured code comes from: $NVFP4_COMMIT, else the COMMIT file a device snapshot carries
    (tools/snapshot_for_device.sh), else `git rev-parse`. nvfp4_bench uses the same order."""
    import subprocess

    if os.environ.get("NVFP4_COMMIT"):
        return os.environ["NVFP4_COMMIT"]
    root = Path(__file__).resolve().parents[1]
    if (root / "COMMIT").is_file():
        return (root / "COMMIT").read_text().strip()
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root)
    return out.stdout.strip() or "unknown"


def nvfp4_weight_bytes(n: int, k: int) -> int:
    """Bytes of one NVFP4 weight copy (packed codes + e4m3 block scales), as the rotation and floors count them."""
    return n * k // 2 + n * k // 16


def copies_for(bytes_per_copy: int, flush_bytes: int = L2_FLUSH_BYTES, cap: int = 8) -> int:
    """Weight copies to cycle so that `flush_bytes` are streamed between two uses of one copy (at most `cap`)."""
    return max(1, min(cap, math.ceil(flush_bytes / bytes_per_copy)))


@functools.cache
def _cycles_per_us() -> float:
    """SM clock cycles per microsecond, measured once with torch.cuda._sleep (no NVML needed)."""
    import torch

    cycles = 2_000_000
    torch.cuda._sleep(cycles)  # warm-up
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / (start.elapsed_time(end) * 1000)


@functools.cache
def timing_stream():
    """The one CUDA stream that every measurement runs on (the module docstring says why)."""
    import torch

    return torch.cuda.Stream()


def on_timing_stream():
    """Context manager: make timing_stream() the current stream (wrap a harness's setup and measurements in it)."""
    import torch

    return torch.cuda.stream(timing_stream())


def capture_calls(fns, calls: int, stream, graph=None):
    """A CUDA graph (`graph`, or a new one) of `calls` back-to-back calls cycling over `fns`, captured on `stream`."""
    import torch

    graph = torch.cuda.CUDAGraph() if graph is None else graph
    # capture_begin/end directly: torch.cuda.graph() would also run gc and torch.cuda.empty_cache() each time
    with torch.cuda.stream(stream):
        graph.capture_begin()
        for i in range(calls):
            fns[i % len(fns)]()
        graph.capture_end()
    if torch.cuda.current_stream() != stream:
        torch.cuda.current_stream().wait_stream(stream)
    return graph


def graph_time_us(make_call, copies: int, calls: int, replays: int = 5) -> float:
    """Per-call time of `calls` back-to-back calls, cycling over `copies` argument sets, inside one CUDA graph
    (best of the replays once settled: settled_best)."""
    import torch  # imported here so that plotting from a JSON (bench/compare.py --plot-only) needs no torch

    fns = [make_call(i) for i in range(copies)]
    s = timing_stream()
    if torch.cuda.current_stream() != s:
        s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
        graph = capture_calls(fns, calls, s)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        global _fresh_shape
        warm_ms, _fresh_shape = (WARM_FIRST_MS if _fresh_shape else WARM_MS), False
        for _ in range(min(10000, int(warm_ms / max(start.elapsed_time(end), 1e-3)))):
            graph.replay()
        s.synchronize()
        spin_cycles = int(SPIN_US * _cycles_per_us()) if SPIN_US > 0 else 0

        def replay_us() -> float:
            if spin_cycles:
                torch.cuda._sleep(spin_cycles)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) * 1000 / calls

        best = settled_best(replay_us, replays)
    del graph
    return best


def read_bandwidth_bytes_per_us(nbytes: int = 2 << 30) -> float:
    """Streaming read bandwidth of the GPU: a sum over an fp32 buffer of `nbytes`, timed as above (the weight-read
    floors of the harnesses divide by it)."""
    import torch

    buf = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").normal_()
    t = graph_time_us(lambda i: (lambda: buf.sum()), 1, 5, 3)
    del buf
    return nbytes / t


def loop_time_us(fn, iters: int = 5) -> float:
    """Per-call time of back-to-back eager calls (for paths whose torch ops cannot be captured; the ~30 us launch
    overhead is negligible against their milliseconds)."""
    import torch

    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000 / iters
