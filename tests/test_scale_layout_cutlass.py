"""The Python 128x4 swizzle against CUTLASS's own Sm1xxBlockScaledConfig layout (host-only C++, no GPU)."""

import subprocess

import pytest
import torch

from conftest import skip_or_fail
from nvfp4 import format as fmt
from tools import cutlass_include, nvcc
from pathlib import Path

SOURCE = Path(__file__).parent / "cpp" / "scale_layout_check.cu"


@pytest.fixture(scope="module")
def layout_check(tmp_path_factory) -> Path:
    compiler, include = nvcc(), cutlass_include()
    if compiler is None or include is None:
        skip_or_fail(f"needs nvcc ({compiler}) and CUTLASS headers ({include}; set NVFP4_CUTLASS_INCLUDE_DIR)")
    exe = tmp_path_factory.mktemp("layout") / "scale_layout_check"
    subprocess.run(
        [compiler, "-std=c++17", "--expt-relaxed-constexpr", f"-I{include}", str(SOURCE), "-o", str(exe)],
        check=True, capture_output=True, text=True,
    )
    return exe


@pytest.mark.parametrize("rows,k", [(1, 16), (7, 48), (128, 64), (130, 80), (255, 1008), (300, 2048), (513, 272)])
def test_python_swizzle_equals_cutlass_layout(layout_check, rows, k):
    out = subprocess.run([str(layout_check), str(rows), str(k)], check=True, capture_output=True, text=True).stdout
    lines = out.strip().split("\n")
    cosize_a, cosize_b = map(int, lines[0].split()[1:])
    groups = k // 16
    assert cosize_a == cosize_b == fmt.swizzled_scale_bytes(rows, groups)
    cutlass_offsets = torch.tensor([[int(v) for v in line.split()] for line in lines[1:]])
    assert cutlass_offsets.shape == (rows, groups)
    python_offsets = torch.tensor([[fmt.swizzled_scale_offset(r, g, groups) for g in range(groups)] for r in range(rows)])
    assert torch.equal(cutlass_offsets, python_offsets)
    # and the tensor-level swizzle puts each scale byte where CUTLASS will read it
    scales = torch.randint(0, 256, (rows, groups), dtype=torch.uint8)
    swz = fmt.swizzle_scales(scales)
    assert torch.equal(swz[cutlass_offsets.reshape(-1)].reshape(rows, groups), scales)
