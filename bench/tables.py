"""Markdown tables of docs/benchmarks.md from one results folder (no GPU, no torch):

    python bench/tables.py bench/results/h100            # provenance, summary ratios, one full table per shape
    python bench/tables.py --summary bench/results/h100  # one line per shape: M = 1 and M = 8192

Reads the folder's compare-*.json (bench/compare.py) and nvfp4_bench-*.json (the C++ harness) and prints the run's
provenance, the summary ratios (geometric means over the (shape, M) points of a range) and one table per shape with
every series. The figures in docs/benchmarks.md, bench/results/*/README.md and the README's table come from this.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

RANGES = (("decode, M ≤ 16", 1, 16), ("prefill, M ≥ 1024", 1024, 1 << 30), ("all M", 1, 1 << 30))


def _one(folder: Path, pattern: str) -> dict:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"{folder}: expected one {pattern}, found {[p.name for p in found]}")
    return json.loads(found[0].read_text())


def _gm(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(folder: Path) -> None:
    """Per shape: decode (M = 1) times and prefill (largest M) throughput, Python harness."""
    py = _one(folder, "compare-*.json")
    fam = py["family"]
    us = {(r["N"], r["K"], r["M"], r["series"]): r for r in py["results"]}
    order = [(r["preset"], r["shape"], r["N"], r["K"]) for r in py["results"]]
    big = max(r["M"] for r in py["results"])
    print(f"| layer (N×K) | M = 1: GEMM µs | layer µs | cuBLAS bf16 µs | cuBLAS / layer | M = {big}: layer TFLOP/s "
          "| cuBLAS TFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for preset, name, n, k in sorted(set(order), key=order.index):
        g, l, c = (us[(n, k, 1, s)] for s in (f"{fam}_invariant", f"{fam}_invariant_layer", "cublas_bf16"))
        lb, cb = us[(n, k, big, f"{fam}_invariant_layer")], us[(n, k, big, "cublas_bf16")]
        print(f"| {preset} {name} ({n}×{k}) | {g['us']:.1f} | {l['us']:.1f} | {c['us']:.1f} | "
              f"{c['us'] / l['us']:.2f} | {lb['tflops']:.0f} | {cb['tflops']:.0f} |")


def main(folder: Path) -> None:
    py = _one(folder, "compare-*.json")
    # the C++ harness is optional: a folder re-measured with compare.py alone has none
    cpp = _one(folder, "nvfp4_bench-*.json") if list(folder.glob("nvfp4_bench-*.json")) else None
    fam = py["family"]
    us = {(r["N"], r["K"], r["M"], r["series"]): r for r in py["results"]}
    cus = {(r["N"], r["K"], r["M"], r["series"]): r for r in cpp["results"]} if cpp else {}
    inv, fast, layer = f"{fam}_invariant", f"{fam}_fast", f"{fam}_invariant_layer"
    quantizer = "quantize_dequant" if fam == "sm90" else "quantize_nvfp4"
    cpp_note = (f" (nvfp4_bench: {cpp['commit']}, {cpp['read_bandwidth_TBps']} TB/s, invariance failures "
                f"{cpp['invariance_failures']})" if cpp else " (no nvfp4_bench run)")
    print(f"GPU {py['gpu']} ({py['sms']} SMs), driver {py['driver']}, torch {py['torch']}, triton {py['triton']}; "
          f"commit {py['commit']}; date {py['date']}; measured read bandwidth {py['read_bandwidth_TBps']} TB/s; "
          f"invariance failures: {py['invariance_failures']}{cpp_note}")
    probes = Counter((r["series"], r["invariance"]) for r in py["results"] if r["invariance"])
    print("invariance probes (Python): " + ", ".join(f"{s} {v} {n}" for (s, v), n in sorted(probes.items())))
    if cpp:
        cprobes = Counter((r["series"], r["invariance"]) for r in cpp["results"] if r["invariance"])
        print("invariance probes (C++): " + ", ".join(f"{s} {v} {n}" for (s, v), n in sorted(cprobes.items())))

    points = sorted({(n, k, m) for n, k, m, s in us if s == inv})
    ratios = (("invariant / fast, GEMM", inv, fast), ("cuBLAS bf16 / invariant GEMM", "cublas_bf16", inv),
              ("cuBLAS bf16 / invariant layer", "cublas_bf16", layer),
              ("invariant bf16 Triton / invariant layer", "triton_invariant_bf16", layer),
              ("emulation / invariant layer", "emulation", layer))
    print("\n| ratio (Python harness, geometric mean [min–max]) | " + " | ".join(r[0] for r in RANGES) + " |")
    print("|---|" + "---|" * len(RANGES))
    for label, num, den in ratios:
        cells = []
        for _, lo, hi in RANGES:
            v = [us[p + (num,)]["us"] / us[p + (den,)]["us"] for p in points
                 if lo <= p[2] <= hi and p + (num,) in us and p + (den,) in us]
            cells.append(f"{_gm(v):#.3g} [{min(v):#.3g}–{max(v):#.3g}]" if v else "–")
        print(f"| {label} | " + " | ".join(cells) + " |")

    order = [(r["preset"], r["shape"], r["N"], r["K"]) for r in py["results"]]
    shapes = sorted(set(order), key=order.index)
    for preset, name, n, k in shapes:
        print(f"\n**{preset} {name}, N×K = {n}×{k}** (µs per call)\n")
        print("| M | GEMM inv. | GEMM inv. C++ | C++ config | GEMM fast | layer inv. | quantizer | cuBLAS bf16 | "
              "Triton inv. bf16 | emulation | GEMM % of read floor |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for m in sorted(p[2] for p in points if p[:2] == (n, k)):
            def cell(series, src=us):
                r = src.get((n, k, m, series))
                return f"{r['us']:.2f}" if r else "–"
            c = cus.get((n, k, m, inv))
            floor = us[(n, k, m, inv)].get("fraction_of_bw_floor")
            print(f"| {m} | {cell(inv)} | {cell(inv, cus)} | {c['config'] if c else '–'} | {cell(fast)} | "
                  f"{cell(layer)} | {cell(quantizer)} | {cell('cublas_bf16')} | "
                  f"{cell('triton_invariant_bf16')} | {cell('emulation')} | "
                  f"{f'{100 * floor:.1f}%' if floor else '–'} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--summary"] and len(args) == 2:
        summary(Path(args[1]))
    elif len(args) == 1:
        main(Path(args[0]))
    else:
        raise SystemExit(__doc__)
