"""Hopper benchmark: NvFp4Linear (invariant and fast) vs cuBLAS bf16 and the emulation path, graph-replay timed.

    python bench/bench_hopper.py [--quick] [--out bench/results]

Timing: each measurement captures a CUDA graph of `--calls` back-to-back calls that cycle through enough weight
copies to exceed the L2 cache several times, replays it, and divides (per-call CUDA events would add ~30 us on the
lent machine). Invariance is checked as it goes: probed rows of each invariant M-row result must equal the same
rows computed alone. Writes <out>/<gpu>-<date>.json (default out: bench/results).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpu_data import random_layer, random_rows  # noqa: E402

import nvfp4  # noqa: E402
from nvfp4 import ops  # noqa: E402
from nvfp4.backends.sm90 import ACT_BF16, linear_sm90_impl  # noqa: E402
from nvfp4.reference import dequantize_weight_blocks  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402,F401
    L2_FLUSH_BYTES, M_VALUES, PRESETS, copies_for, graph_time_us, loop_time_us, on_timing_stream,
    read_bandwidth_bytes_per_us, source_commit,
)

SHAPES = [(n, k) for preset, _, n, k in PRESETS if preset in ("llama-3.1-8b", "llama-3.1-70b")]


def emulation(x, w_packed, w_scale, ws2, bias):
    """What a user gets without a kernel: dequantize the NVFP4 weights on every call, then a bf16 matmul."""
    w = (dequantize_weight_blocks(w_packed, w_scale) * ws2).to(torch.bfloat16)
    return torch.nn.functional.linear(x, w, bias)


def bench_shape(n: int, k: int, m_values, calls: int, with_emulation: bool) -> list[dict]:
    nvfp4_bytes = n * k // 2 + n * k // 16
    copies = copies_for(nvfp4_bytes)
    inv_layers = [random_layer(n, k, seed=c) for c in range(copies)]
    fast_layers = []
    for layer in inv_layers:
        fast = random_layer(n, k, seed=0, batch_invariant=False)
        fast.load_state_dict(layer.state_dict())
        fast_layers.append(fast)
    bf16_copies = copies_for(n * k * 2)
    bf16_weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(bf16_copies)]
    floor_us = nvfp4_bytes / READ_BW_BYTES_PER_US
    rows = []
    for m in m_values:
        x = random_rows(m, k, seed=m)
        # invariance probe: first, last and a middle row equal their M=1 results
        out = inv_layers[0](x)
        for r in sorted({0, m // 2, m - 1}):
            if not torch.equal(out[r : r + 1], inv_layers[0](x[r : r + 1])):
                raise SystemExit(f"INVARIANCE FAILURE at N={n} K={k} M={m} row {r}")
        del out
        t_inv = graph_time_us(lambda i: (lambda: inv_layers[i](x)), copies, calls)
        # the GEMM alone, on activations quantized once (separates the quantizer's share of the layer time)
        act, alpha = ops.quantize_activations_dequant_impl(x, None, inv_layers[0].weight_scale_2.reshape(1))
        t_gemm = graph_time_us(
            lambda i: (lambda: linear_sm90_impl(act, inv_layers[i].weight, alpha, None, inv_layers[i].bias, ACT_BF16,
                                                True, n)), copies, calls)
        t_fast = graph_time_us(lambda i: (lambda: fast_layers[i](x)), copies, calls)
        t_cublas = graph_time_us(lambda i: (lambda: x @ bf16_weights[i].t()), bf16_copies, calls)
        row = {
            "N": n, "K": k, "M": m,
            "invariant_us": round(t_inv, 2), "invariant_gemm_only_us": round(t_gemm, 2), "fast_us": round(t_fast, 2), "cublas_bf16_us": round(t_cublas, 2),
            "invariant_tflops": round(2 * m * n * k / t_inv / 1e6, 1),
            "cublas_tflops": round(2 * m * n * k / t_cublas / 1e6, 1),
            "invariant_weight_GBps": round(nvfp4_bytes / t_inv / 1e3, 1),
            "speedup_vs_cublas": round(t_cublas / t_inv, 3),
            "invariant_over_fast": round(t_inv / t_fast, 3),
            "fraction_of_bw_floor": round(floor_us / t_inv, 3),
        }
        if with_emulation and (m <= 16 or m == max(m_values)):
            layer = inv_layers[0]
            w_packed, ws = layer.modelopt_weights()  # the checkpoint layout the emulation reads
            ws = ws.view(torch.uint8)
            t_emu = loop_time_us(lambda: emulation(x, w_packed, ws, layer.weight_scale_2, layer.bias))
            row["emulation_us"] = round(t_emu, 1)
            row["speedup_vs_emulation"] = round(t_emu / t_inv, 1)
        rows.append(row)
        print(
            f"N={n:6d} K={k:6d} M={m:5d}  inv {t_inv:9.2f} us (gemm {t_gemm:9.2f})  fast {t_fast:9.2f}  cuBLAS {t_cublas:9.2f}  "
            f"x{row['speedup_vs_cublas']:.2f} vs cuBLAS  {row['invariant_tflops']:6.1f} TF/s  "
            f"{100 * row['fraction_of_bw_floor']:5.1f}% of floor"
            + (f"  emulation {row['emulation_us']:.0f} us" if "emulation_us" in row else ""),
            flush=True,
        )
        del x, act, alpha
    del inv_layers, fast_layers, bf16_weights
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two shapes, a few M values")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_hopper.py needs a CUDA GPU")
    global READ_BW_BYTES_PER_US
    shapes = SHAPES[:2] if args.quick else SHAPES
    m_values = [1, 16, 256, 4096] if args.quick else M_VALUES
    results = []
    with on_timing_stream():  # setup and timing on one stream (bench/timing.py says why)
        READ_BW_BYTES_PER_US = read_bandwidth_bytes_per_us(4 << 30)
        for n, k in shapes:
            results += bench_shape(n, k, m_values, args.calls, with_emulation=True)
    props = torch.cuda.get_device_properties(0)
    commit = source_commit()
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip()
    date = datetime.date.today().isoformat()
    report = {
        "date": date, "gpu": props.name, "sms": props.multi_processor_count, "driver": driver,
        "torch": torch.__version__, "nvfp4": nvfp4.__version__, "commit": commit or "unknown",
        "read_bandwidth_TBps": round(READ_BW_BYTES_PER_US / 1e6, 3),
        "method": "CUDA-graph replay of back-to-back calls, weight copies rotated past L2, best of the replays once 5 in a row gave no new best (0.5%)",
        "layer": "NvFp4Linear forward, per-token W4A4 (activation quantizer + GEMM), bf16 out, with bias",
        "results": results,
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = props.name.replace(" ", "-").replace("/", "-")
    path = out_dir / f"{name}-{date}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


READ_BW_BYTES_PER_US = 3.07e6

if __name__ == "__main__":
    main()
