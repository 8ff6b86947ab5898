"""bench/presets.txt is the one list of benchmark shapes: the Python harness reads it at import, nvfp4_bench embeds it
at build time. Both must expose the same presets (checked against the binary CI builds in build/cmake-bench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import timing  # noqa: E402


def test_presets_are_well_formed():
    assert timing.PRESET_NAMES == ["deepseek-v3", "llama-3.1-70b", "llama-3.1-8b", "qwen3-32b"]
    assert len(timing.PRESETS) == 18
    assert all(n > 0 and k > 0 and k % 16 == 0 for _, _, n, k in timing.PRESETS)
    assert timing.M_VALUES == sorted(timing.M_VALUES) and timing.M_VALUES[0] == 1
    assert timing.QUICK_SHAPES == timing.PRESETS[:2] and timing.QUICK_M == [1, 16, 256]


def test_cpp_bench_lists_the_same_presets():
    binaries = sorted(ROOT.glob("build/*/bench/nvfp4_bench"))
    if not binaries:
        skip_or_fail("no nvfp4_bench built under build/*/bench (CI builds build/cmake-bench first)")
    out = subprocess.run([str(binaries[0]), "--list-presets"], capture_output=True, text=True, check=True).stdout
    listed = []
    for line in out.splitlines():
        preset, name, n, k = line.split()
        listed.append((preset, name, int(n.removeprefix("N=")), int(k.removeprefix("K="))))
    assert listed == timing.PRESETS
