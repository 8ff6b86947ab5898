"""The bits of the invariant Hopper layer, pinned: hashes of outputs for fixed inputs (generated on the CPU, so every
machine builds the same operands) over shapes, M values and activation modes, committed in
tests/fingerprints/sm90.json from the lent GPU. Any other compute capability 9.0 GPU (another SM count, PCIe or SXM,
H100 or H200, a MIG slice) must compute the same bits: the chunk rule depends on (N, K) only.

NVFP4_WRITE_FINGERPRINT=1 rewrites the file from this device instead of comparing (done once, on the lent GPU).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from nvfp4 import NvFp4Linear, NvFp4Tensor
from conftest import requires_cuda, wide_spread

pytestmark = [requires_cuda, pytest.mark.gpu]

FILE = Path(__file__).resolve().parent / "fingerprints" / "sm90.json"
SHAPES = [(4096, 4096), (6144, 4096), (1000, 4000), (8192, 8192), (24, 80)]
M_VALUES = [1, 7, 16, 17, 64, 65, 300]
MODES = ["per-token", "static", "none"]


def _layer(n: int, k: int, activation: str) -> NvFp4Linear:
    g = torch.Generator().manual_seed(n * 31 + k)
    data = torch.randint(0, 256, (n, k // 2), generator=g, dtype=torch.uint8)
    scale = torch.exp2(torch.randint(-9, 9, (n, k // 16), generator=g).float()).to(torch.float8_e4m3fn)
    bias = torch.randn(n, generator=g).to(torch.bfloat16)
    q = NvFp4Tensor(data, scale, torch.tensor(0.75))
    layer = NvFp4Linear.from_quantized(q, bias=bias, input_scale=0.01 if activation == "static" else None,
                                       activation=activation, batch_invariant=True)
    return layer.cuda()


def fingerprints() -> dict[str, str]:
    out = {}
    for n, k in SHAPES:
        for mode in MODES:
            layer = _layer(n, k, mode)
            x = wide_spread(max(M_VALUES), k, seed=n + k).clamp(-1e4, 1e4).cuda()
            for m in M_VALUES:
                y = layer(x[:m]).cpu().contiguous()
                out[f"{n}x{k}/{mode}/M={m}"] = hashlib.sha256(y.view(torch.uint8).numpy().tobytes()).hexdigest()
    return out


def test_outputs_match_the_committed_fingerprint():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the fingerprint is of the sm_90a kernels")
    got = fingerprints()
    if os.environ.get("NVFP4_WRITE_FINGERPRINT") == "1":
        FILE.parent.mkdir(exist_ok=True)
        FILE.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "hashes": got}, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {FILE}")
    assert FILE.is_file(), f"{FILE} is missing: make it on a Hopper GPU with NVFP4_WRITE_FINGERPRINT=1"
    want = json.loads(FILE.read_text())["hashes"]
    assert sorted(got) == sorted(want)
    differ = [key for key in want if got[key] != want[key]]
    assert not differ, f"{len(differ)} of {len(want)} outputs differ from the fingerprint, e.g. {differ[:5]}"
