"""Shared test helpers: wide-spread random data, GPU skipping, strict mode for CI's host tools, fixture paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# In CI (.ci/run sets NVFP4_REQUIRE_HOST_TOOLS=1) a missing host tool (nvcc, cuobjdump, CUTLASS headers, the compiled
# library) is a failure, not a skip: those tests are the only proof that the Blackwell code was built.
STRICT_HOST_TOOLS = os.environ.get("NVFP4_REQUIRE_HOST_TOOLS") == "1"


def skip_or_fail(reason: str) -> None:
    if STRICT_HOST_TOOLS:
        pytest.fail(f"{reason} (NVFP4_REQUIRE_HOST_TOOLS=1)")
    pytest.skip(reason)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# modelopt-nvfp4 is also the CPU demo checkpoint of `python -m nvfp4 demo`, so its one copy ships in the package.
PACKAGE_FIXTURES = Path(__file__).resolve().parents[1] / "python" / "nvfp4" / "_fixtures"


def fixture_dir(name: str) -> Path:
    """The folder of the fixture checkpoint `name`: tests/fixtures/, or python/nvfp4/_fixtures/ for modelopt-nvfp4."""
    return (PACKAGE_FIXTURES if name == "modelopt-nvfp4" else FIXTURES) / name


def wide_spread(rows: int, cols: int, *, seed: int, dtype: torch.dtype = torch.bfloat16, device="cpu") -> torch.Tensor:
    """Random rows whose magnitudes span many binades, across rows and across 16-element blocks.

    Narrow spreads make fp32 partial sums of 4-bit products exact, which hides any reordering; these spreads do not.
    Includes all-zero blocks and tiny blocks.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g, dtype=torch.float32)
    row_scale = torch.exp2(torch.randint(-12, 12, (rows, 1), generator=g).float())
    block_scale = torch.exp2(torch.randint(-10, 10, (rows, cols // 16, 1), generator=g).float())
    x = (x.reshape(rows, cols // 16, 16) * block_scale).reshape(rows, cols) * row_scale
    zero_blocks = torch.rand(rows, cols // 16, generator=g) < 0.03
    tiny_blocks = torch.rand(rows, cols // 16, generator=g) < 0.03
    x = x.reshape(rows, cols // 16, 16)
    x[zero_blocks] = 0
    x[tiny_blocks] *= 1e-30
    return x.reshape(rows, cols).to(dtype).to(device)
