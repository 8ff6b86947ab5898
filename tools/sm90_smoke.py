"""Quick check of the Hopper layer against the reference backend on a few shapes, M values, activation modes and
plans, printing each case before it runs (a hang shows where). For the device machine: python3 tools/sm90_smoke.py"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpu_data import random_layer, random_rows  # noqa: E402

from nvfp4 import NvFp4Linear  # noqa: E402
from nvfp4.backends import sm90  # noqa: E402


def main() -> int:
    small = "--small" in sys.argv  # small shapes only (for compute-sanitizer)
    shapes = ((256, 256), (24, 80), (1000, 4000)) if small else (
        (256, 256), (24, 80), (1000, 4000), (4096, 4096), (6144, 4096), (8192, 8192))
    failures = 0
    for n, k in shapes:
        for activation in ("per-token", "static", "none"):
            layer = random_layer(n, k, seed=n + k, activation=activation)
            ref = NvFp4Linear(k, n, activation=activation, backend="reference", device="cuda")
            ref.load_state_dict(layer.state_dict())
            for m in (1, 8, 16, 17, 64, 65, 300):
                x = random_rows(m, k, seed=m)
                want = ref(x).float()
                for options in (dict(), dict(fused="never"), dict(split_reduce="kernel"), dict(sm_count=16)):
                    with sm90.planning(**options):
                        plan = sm90.plan(m, n, k, activation)
                        print(f"{n}x{k} {activation} M={m} {options} {plan}", end=" ", flush=True)
                        t = time.perf_counter()
                        got = layer(x).float()
                        torch.cuda.synchronize()
                    rel = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
                    alone = layer(x[-1:]).float()
                    inv = torch.equal(alone, got[-1:])
                    ok = rel < 1e-2 and inv and not torch.isnan(got).any()
                    failures += not ok
                    print(f"rel {rel:.2e} last-row-alone {'ok' if inv else 'DIFFERS'} "
                          f"{(time.perf_counter() - t) * 1e3:.1f} ms {'ok' if ok else 'FAIL'}", flush=True)
    print(f"smoke: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
