"""The Hopper speed targets, computed from compare.py JSON (no GPU, no torch):

    python bench/acceptance.py NEW.json [--baseline OLD.json]

Prints, over the shapes of NEW.json (both runs from one device session when a baseline is given):
- the invariant layer at M = 1 as a fraction of the weight-read floor (0.5625 B/weight at the read bandwidth the
  same run measured), geometric mean over the shapes;
- cuBLAS bf16 time over the invariant layer's, geometric mean over M <= 16, and over M >= 1024 (GEMM and layer);
- invariant / fast GEMM time, geometric mean and worst over all M;
- with a baseline: new / old invariant layer time, geometric mean over M > 16 and over M <= 16, and the worst points.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _gm(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def load(path: Path) -> tuple[dict, dict]:
    d = json.loads(path.read_text())
    return d, {(r["N"], r["K"], r["M"], r["series"]): r["us"] for r in d["results"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("new", type=Path)
    ap.add_argument("--baseline", type=Path)
    args = ap.parse_args()
    d, us = load(args.new)
    fam = d["family"]
    bw = d["read_bandwidth_TBps"] * 1e6  # bytes per us
    shapes = sorted({(n, k) for n, k, _, _ in us})
    ms = sorted({m for _, _, m, _ in us})
    print(f"{args.new.name}: {d['gpu']}, commit {d.get('commit')}, {d['date']}, read bandwidth {d['read_bandwidth_TBps']:.2f} TB/s")
    floor = {s: s[0] * s[1] * 0.5625 / bw for s in shapes}
    frac = [floor[s] / us[(*s, 1, f"{fam}_invariant_layer")] for s in shapes if (*s, 1, f"{fam}_invariant_layer") in us]
    print(f"M = 1 invariant layer: {_gm(frac):.1%} of the floor (geomean of {len(frac)} shapes; "
          f"per shape {', '.join(f'{f:.0%}' for f in frac)})")
    for label, lo, hi in (("M <= 16", 1, 16), ("M >= 1024", 1024, 1 << 30)):
        for what in ("invariant_layer", "invariant"):
            r = [us[(*s, m, "cublas_bf16")] / us[(*s, m, f"{fam}_{what}")] for s in shapes for m in ms
                 if lo <= m <= hi and (*s, m, "cublas_bf16") in us and (*s, m, f"{fam}_{what}") in us]
            print(f"{label}: cuBLAS bf16 / {what.replace('_', ' ')} = {_gm(r):.3f}x ({len(r)} points)")
    r = [us[(*s, m, f"{fam}_invariant")] / us[(*s, m, f"{fam}_fast")] for s in shapes for m in ms
         if (*s, m, f"{fam}_fast") in us and (*s, m, f"{fam}_invariant") in us]
    print(f"invariant / fast GEMM: geomean {_gm(r):.3f}, worst {max(r):.3f}")
    if args.baseline:
        _, old = load(args.baseline)
        for label, lo, hi in (("M <= 16", 1, 16), ("M > 16", 17, 1 << 30)):
            pts = [((*s, m), us[(*s, m, f"{fam}_invariant_layer")] / old[(*s, m, f"{fam}_invariant_layer")])
                   for s in shapes for m in ms if lo <= m <= hi and (*s, m, f"{fam}_invariant_layer") in old
                   and (*s, m, f"{fam}_invariant_layer") in us]
            worst = sorted(pts, key=lambda p: -p[1])[:3]
            print(f"new / old invariant layer, {label}: geomean {_gm([p[1] for p in pts]):.3f} over {len(pts)} points; "
                  f"worst {', '.join(f'{n}x{k} M={m}: {v:.3f}' for (n, k, m), v in worst)}")


if __name__ == "__main__":
    main()
