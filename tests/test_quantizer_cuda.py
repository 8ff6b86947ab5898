"""The CUDA activation quantizer is bit-identical to the reference recipe (device test; skips without a GPU)."""

import pytest
import torch

from nvfp4 import ops
from nvfp4.activation import quantize_activations_reference
from nvfp4.backends import device_capability, quantizer_compiled_for
from conftest import requires_cuda, wide_spread

pytestmark = [requires_cuda, pytest.mark.gpu]

M_VALUES = [1, 2, 3, 7, 16, 17, 31, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 4096]


@pytest.fixture(scope="module", autouse=True)
def _kernel_present():
    if not quantizer_compiled_for(device_capability(torch.device("cuda"))):
        pytest.fail("the library holds no quantizer code for this GPU")


def _hard_rows(m: int, k: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Wide spreads plus zero, tiny, huge, NaN and Inf blocks in some rows."""
    x = wide_spread(m, k, seed=seed, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    finfo = torch.finfo(dtype)
    specials = [0.0, finfo.tiny, finfo.tiny * 2**-6, finfo.max, finfo.max / 7, float("nan"), float("inf"), -float("inf")]
    for r in torch.randint(0, m, (max(1, m // 8),), generator=g).tolist():
        blk = int(torch.randint(0, k // 16, (1,), generator=g))
        value = specials[int(torch.randint(0, len(specials), (1,), generator=g))]
        x[r, blk * 16 : blk * 16 + int(torch.randint(1, 17, (1,), generator=g))] = value
    return x.to(dtype)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16) if t.element_size() == 2 else t


def _assert_same(cuda_out, ref_out, what):
    for name, a, b in zip(("packed", "scales", "dequant", "row_scale"), cuda_out, ref_out):
        a, b = a.cpu(), b.cpu()
        if not torch.equal(_bits(a), _bits(b)):
            diff = (_bits(a) != _bits(b)).nonzero()[:5].tolist()
            raise AssertionError(f"{what}: {name} differs at {diff}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("static", [False, True])
# Launch thresholds (quantize_activations.cu): at M <= 64 rows of at most 2048 blocks (K <= 32768) take the resident
# kernel, one block per thread up to K = 16384, two above; at M > 64 only rows of at most 512 blocks (K <= 8192) do.
# Longer rows take the streaming kernel, chunked at M <= 64 (K = 32784, 40960). K = 16 and 48 leave padding blocks in
# the swizzled scales; M_VALUES straddles 64 and the 128-row scale tiles.
@pytest.mark.parametrize("k", [16, 48, 1008, 4096, 8192, 8208, 12304, 16400, 28672, 32768, 32784, 40960])
def test_bit_identical_to_reference(dtype, static, k):
    for m in M_VALUES:
        if (m * k > 4096 * 1008 and m > 1000) or (k > 16384 and m > 300):
            continue  # the reference on CPU is slow; M=4096 is covered at K=1008, M=1000 up to K=12304
        x = _hard_rows(m, k, seed=m * 31 + k, dtype=dtype)
        scale = torch.tensor([0.0173 if dtype == torch.float16 else 3.7]) if static else None
        ref = quantize_activations_reference(x, scale)
        xc = x.cuda()
        sc = None if scale is None else scale.cuda()
        packed, scales, row_scale = ops.quantize_activations_nvfp4_impl(xc, sc)
        dequant, row_scale2 = ops.quantize_activations_dequant_impl(xc, sc)
        torch.cuda.synchronize()
        _assert_same((packed, scales, dequant, row_scale), ref, f"M={m} K={k} {dtype} static={static}")
        assert torch.equal(row_scale.view(torch.int32), row_scale2.view(torch.int32))
        # the fused alpha (row scale times the weight's global scale) matches the reference's fp32 product
        mult = torch.tensor([0.3712], device="cuda")
        _, alpha = ops.quantize_activations_dequant_impl(xc, sc, mult)
        ref_alpha = quantize_activations_reference(x, scale, mult.cpu())[3]
        assert torch.equal(alpha.cpu().view(torch.int32), ref_alpha.view(torch.int32))


def test_padding_is_zeroed_even_in_dirty_memory():
    x = wide_spread(5, 80, seed=9).cuda()
    junk = torch.full((128 * 8,), 0x7F, dtype=torch.uint8, device="cuda")  # the scale buffer's size: reused next
    del junk
    _, scales, _ = ops.quantize_activations_nvfp4_impl(x, None)
    ref = quantize_activations_reference(x.cpu(), None)[1]
    assert torch.equal(scales.cpu(), ref)


def test_strided_rows_and_every_row_equals_its_m1_run():
    base = wide_spread(300, 160, seed=11).cuda()
    x = base[:, :144]  # row stride 160 != cols
    dq, rs = ops.quantize_activations_dequant_impl(x, None)
    for r in (0, 1, 77, 128, 299):
        alone, _ = ops.quantize_activations_dequant_impl(x[r : r + 1].contiguous(), None)
        assert torch.equal(alone[0], dq[r])


def test_custom_op_runs_under_cuda_graph():
    x = wide_spread(64, 256, seed=12).cuda()
    static = torch.tensor([0.5], device="cuda")
    eager = ops.quantize_activations_dequant(x, static)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        ops.quantize_activations_dequant(x, static)  # warm up on the side stream
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        captured = ops.quantize_activations_dequant(x, static)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured[0], eager[0]) and torch.equal(captured[1], eager[1])
