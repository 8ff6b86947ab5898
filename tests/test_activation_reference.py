"""The activation recipe (what the CUDA quantizer reproduces): row-local, exact dequantized values."""

import torch

from nvfp4.activation import per_token_global_scale, quantize_activations_reference
from nvfp4.format import e2m1_values, swizzled_scale_offset, unpack_e2m1
from nvfp4.formats.modelopt import quantize_weight as quantize_modelopt
from conftest import wide_spread


def test_static_scale_equals_modelopt_recipe_on_each_row():
    x = wide_spread(20, 96, seed=1)
    amax = torch.tensor(1000.0)
    packed, scales, dequant, s2 = quantize_activations_reference(x, amax / 2688)
    q = quantize_modelopt(x, amax)
    assert torch.equal(packed, q.data)
    offsets = torch.tensor([[swizzled_scale_offset(r, g, 6) for g in range(6)] for r in range(20)])
    assert torch.equal(scales[offsets], q.scale.view(torch.uint8))
    assert torch.equal(s2, torch.full((20,), (amax / 2688).item()))


def test_dequantized_values_are_exact_products():
    x = wide_spread(7, 64, seed=2)
    packed, scales, dequant, _ = quantize_activations_reference(x, None)
    offsets = torch.tensor([[swizzled_scale_offset(r, g, 4) for g in range(4)] for r in range(7)])
    block = scales[offsets].view(torch.float8_e4m3fn).float().repeat_interleave(16, dim=1)
    exact = e2m1_values(unpack_e2m1(packed)) * block
    assert torch.equal(dequant.float(), exact)


def test_per_token_scale_is_row_local_and_handles_zero_rows():
    x = wide_spread(6, 32, seed=3)
    x[2] = 0
    s2 = per_token_global_scale(x)
    assert s2[2] == 1.0
    for i in range(6):
        assert torch.equal(per_token_global_scale(x[i : i + 1]), s2[i : i + 1])


def test_nan_and_inf_rows_never_touch_other_rows():
    x = wide_spread(5, 64, seed=4)
    clean = [t.clone() for t in quantize_activations_reference(x, None)]
    x[1, 5] = float("nan")
    x[3, 40] = float("inf")
    dirty = quantize_activations_reference(x, None)
    for r in (0, 2, 4):
        assert torch.equal(dirty[0][r], clean[0][r])
        assert torch.equal(dirty[2][r], clean[2][r])
        assert torch.equal(dirty[3][r], clean[3][r])
    assert torch.isnan(dirty[2][1]).any() and torch.isnan(dirty[3][1])


def test_nan_encodings_are_canonical():
    x = wide_spread(3, 64, seed=5)
    x[0, 17] = float("nan")
    x[1] = float("nan")
    packed, scales, dequant, s2 = quantize_activations_reference(x, None)
    nan_bits = dequant.view(torch.int16)[torch.isnan(dequant)]
    assert nan_bits.numel() >= 16 + 64 and (nan_bits == 0x7FC0).all()
    assert s2.view(torch.int32)[1] == 0x7FC00000
    nan_scales = scales[torch.isnan(scales.view(torch.float8_e4m3fn).float())]
    assert nan_scales.numel() >= 5 and (nan_scales == 0x7F).all()
