"""Mixture-of-experts projections on Hopper: the grouped NVFP4 GEMM (one launch for all experts) against one NVFP4
call per expert and the bf16 peers, on a Qwen3-30B-A3B-like layer (128 experts, top-8, hidden 2048, expert width 768).

    python bench/bench_moe.py [--tokens 1,4,16,64,256,1024,4096] [--experts 128] [--top-k 8] [--out DIR]

Series per (projection, tokens T; S = T * top_k rows sorted by expert, experts drawn at random without repeats
per token):
  grouped             NvFp4GroupedLinear.forward on sm90 (nvfp4_sm90_grouped_linear), invariant, W4A4 per-token
  per_expert          one invariant NvFp4Linear-equivalent call per expert with rows (the counts known on the host,
                      so the calls are captured in the graph: the best case of a loop without a grouped kernel)
  bf16_grouped_mm     torch._grouped_mm with the dequantized bf16 weights (cuBLAS grouped GEMM), where torch has it
  bf16_per_expert     one cuBLAS bf16 matmul per expert with rows
floor_us: the NVFP4 bytes of the experts the call touches (0.5625 B per weight) at the read bandwidth measured here.
Timing is bench/timing.py's (CUDA-graph replay, back-to-back calls cycling over layer copies and routings).
Writes <out>/moe-<gpu>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    graph_time_us, new_shape, nvfp4_weight_bytes, on_timing_stream, read_bandwidth_bytes_per_us, source_commit,
)

from nvfp4.backends import sm90  # noqa: E402
from nvfp4.backends.base import Backend  # noqa: E402
from nvfp4.moe_linear import NvFp4GroupedLinear  # noqa: E402

COPIES = 4  # layer copies (each with its own routing) cycled by the calls of a graph


def random_layer(e: int, n: int, k: int, seed: int) -> NvFp4GroupedLinear:
    g = torch.Generator(device="cuda").manual_seed(seed)
    layer = NvFp4GroupedLinear(e, k, n, batch_invariant=True, device="cuda")
    layer.load_state_dict({
        "weight": torch.randint(0, 256, (e, n, k // 2), generator=g, device="cuda", dtype=torch.uint8),
        "weight_scale": torch.exp2(torch.randint(-6, 3, (e, n, k // 16), generator=g, device="cuda").float())
        .to(torch.float8_e4m3fn),
        "weight_scale_2": torch.full((e,), 0.01, device="cuda"),
    })
    return layer


def routing(tokens: int, e: int, top_k: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    experts = torch.rand(tokens, e, generator=g).topk(top_k, dim=1).indices.flatten()
    return torch.bincount(experts, minlength=e).tolist()


def dequantized_bf16(layer: NvFp4GroupedLinear) -> torch.Tensor:
    from nvfp4.reference import dequantize_weight_blocks

    w, s = layer.modelopt_weights()
    return torch.stack([(dequantize_weight_blocks(w[i], s[i]) * layer.weight_scale_2[i]).to(torch.bfloat16)
                        for i in range(layer.num_experts)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="1,4,16,64,256,1024,4096")
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--replays", type=int, default=5)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        raise SystemExit("bench_moe.py needs a Hopper GPU (compute capability 9.0)")
    e, top_k = args.experts, args.top_k
    tokens = [int(t) for t in args.tokens.split(",")]
    shapes = {"gate_or_up": (args.width, args.hidden), "down": (args.hidden, args.width)}
    results = []
    with on_timing_stream():
        read_bytes_per_us = read_bandwidth_bytes_per_us()
        print(f"{torch.cuda.get_device_name()}: read bandwidth {read_bytes_per_us / 1e6:.2f} TB/s", flush=True)
        for proj, (n, k) in shapes.items():
            layers = [random_layer(e, n, k, seed=c) for c in range(COPIES)]
            bf16 = [dequantized_bf16(lay) for lay in layers]
            new_shape()
            for t in tokens:
                s = t * top_k
                counts = [routing(t, e, top_k, seed=100 * t + c) for c in range(COPIES)]
                offsets = [torch.tensor([0] + cs, dtype=torch.int64).cumsum(0).cuda() for cs in counts]
                xs = [torch.randn(s, k, device="cuda", dtype=torch.bfloat16) for _ in range(COPIES)]
                touched = sum(sum(1 for v in cs if v) for cs in counts) / COPIES
                floor_us = touched * nvfp4_weight_bytes(n, k) / read_bytes_per_us
                line = {"projection": proj, "N": n, "K": k, "E": e, "top_k": top_k, "tokens": t, "rows": s,
                        "experts_touched": touched, "floor_us": round(floor_us, 3),
                        "plan": vars(sm90.grouped_plan(s, e, n, k))}

                def per_expert_calls(c: int, fn):
                    bounds = [0] + torch.tensor(counts[c]).cumsum(0).tolist()
                    spans = [(i, bounds[i], bounds[i + 1]) for i in range(e) if bounds[i + 1] > bounds[i]]
                    return lambda: [fn(c, i, lo, hi) for i, lo, hi in spans]

                series = {
                    "grouped": lambda c: (lambda: layers[c](xs[c], offsets[c])),
                    "per_expert": lambda c: per_expert_calls(
                        c, lambda c, i, lo, hi: sm90.BACKEND.forward(layers[c].expert(i), xs[c][lo:hi])),
                    "bf16_per_expert": lambda c: per_expert_calls(
                        c, lambda c, i, lo, hi: xs[c][lo:hi] @ bf16[c][i].t()),
                }
                if hasattr(torch, "_grouped_mm"):
                    ends = [o[1:].to(torch.int32) for o in offsets]
                    series["bf16_grouped_mm"] = lambda c: (
                        lambda: torch._grouped_mm(xs[c], bf16[c].transpose(-2, -1), offs=ends[c]))
                for name, make in series.items():
                    try:
                        line[name + "_us"] = round(graph_time_us(make, COPIES, args.calls, args.replays), 3)
                    except Exception as exc:  # a peer torch cannot run here is reported, not fatal
                        line[name + "_us"] = None
                        line[name + "_error"] = f"{type(exc).__name__}: {exc}"[:200]
                got = layers[0](xs[0], offsets[0])
                want = Backend.grouped_forward(sm90.BACKEND, layers[0], xs[0], offsets[0])
                line["grouped_equals_per_expert"] = bool(torch.equal(got, want))
                results.append(line)
                print(json.dumps(line), flush=True)
    date = datetime.datetime.now(datetime.timezone.utc)
    gpu = torch.cuda.get_device_name().replace(" ", "-")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"moe-{gpu}-{date:%Y-%m-%d}.json"
    path.write_text(json.dumps({"gpu": torch.cuda.get_device_name(), "date": date.isoformat(timespec="seconds"),
                                "commit": source_commit(), "torch": torch.__version__,
                                "read_bandwidth_TBps": round(read_bytes_per_us / 1e6, 3), "results": results},
                               indent=1))
    print(path)


if __name__ == "__main__":
    main()
