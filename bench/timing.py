"""Timing helpers and shape presets shared by bench/bench_hopper.py and bench/compare.py.

The method is the one nvfp4_bench (bench/cpp/nvfp4_bench.cu) uses, so the C++ and Python harnesses time the same
kernels the same way: one CUDA graph of `calls` back-to-back calls cycling over weight copies whose total size
exceeds L2 several times, replayed `replays` times, best per-call time kept.
"""

from __future__ import annotations

import math

L2_FLUSH_BYTES = 200 << 20

# Shape presets: (preset, layer name, N = output features, K = input features); fused projections as serving engines
# fuse them. Sources: each model's config.json on the Hugging Face hub; dense layers only. Keep in sync with
# all_presets() in bench/cpp/nvfp4_bench.cu.
PRESETS: list[tuple[str, str, int, int]] = [
    # meta-llama/Llama-3.1-8B: hidden 4096, intermediate 14336, 32 heads, 8 KV heads, head_dim 128
    ("llama-3.1-8b", "qkv_proj", 6144, 4096),
    ("llama-3.1-8b", "o_proj", 4096, 4096),
    ("llama-3.1-8b", "gate_up_proj", 28672, 4096),
    ("llama-3.1-8b", "down_proj", 4096, 14336),
    # meta-llama/Llama-3.1-70B: hidden 8192, intermediate 28672, 64 heads, 8 KV heads, head_dim 128
    ("llama-3.1-70b", "qkv_proj", 10240, 8192),
    ("llama-3.1-70b", "o_proj", 8192, 8192),
    ("llama-3.1-70b", "gate_up_proj", 57344, 8192),
    ("llama-3.1-70b", "down_proj", 8192, 28672),
    # Qwen/Qwen3-32B: hidden 5120, intermediate 25600, 64 heads, 8 KV heads, head_dim 128
    ("qwen3-32b", "qkv_proj", 10240, 5120),
    ("qwen3-32b", "o_proj", 5120, 8192),
    ("qwen3-32b", "gate_up_proj", 51200, 5120),
    ("qwen3-32b", "down_proj", 5120, 25600),
    # deepseek-ai/DeepSeek-V3: hidden 7168, dense intermediate 18432 (first_k_dense_replace = 3), MLA: 128 heads,
    # q_lora_rank 1536, kv_lora_rank 512, qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128
    ("deepseek-v3", "q_a+kv_a_proj", 2112, 7168),
    ("deepseek-v3", "q_b_proj", 24576, 1536),
    ("deepseek-v3", "kv_b_proj", 32768, 512),
    ("deepseek-v3", "o_proj", 7168, 16384),
    ("deepseek-v3", "gate_up_proj", 36864, 7168),
    ("deepseek-v3", "down_proj", 7168, 18432),
]
PRESET_NAMES = sorted({p for p, *_ in PRESETS})
M_VALUES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
QUICK_SHAPES = PRESETS[:2]
QUICK_M = [1, 16, 256]


def nvfp4_weight_bytes(n: int, k: int) -> int:
    """Bytes of one NVFP4 weight copy (packed codes + e4m3 block scales), as the rotation and floors count them."""
    return n * k // 2 + n * k // 16


def copies_for(bytes_per_copy: int, flush_bytes: int = L2_FLUSH_BYTES, cap: int = 8) -> int:
    """Weight copies to cycle so that `flush_bytes` are streamed between two uses of one copy (at most `cap`)."""
    return max(1, min(cap, math.ceil(flush_bytes / bytes_per_copy)))


def graph_time_us(make_call, copies: int, calls: int, replays: int = 5) -> float:
    """Per-call time of `calls` back-to-back calls, cycling over `copies` argument sets, inside one CUDA graph."""
    import torch  # imported here so that plotting from a JSON (bench/compare.py --plot-only) needs no torch

    fns = [make_call(i) for i in range(copies)]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fns[i % copies]()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(replays):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1000 / calls)
    del graph
    return best


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
