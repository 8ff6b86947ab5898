"""Every public entry point rejects bad input with a message naming the argument and the rule."""

import pytest
import torch
from torch import nn

import nvfp4
from nvfp4 import NvFp4Linear, ops
from nvfp4.backends.reference import mm_reference_impl
from nvfp4.tensor import NvFp4Tensor


def test_quantize_rejects_bad_input():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        nvfp4.quantize([[1.0] * 16])
    with pytest.raises(TypeError, match="x must have dtype bfloat16, float16, float32"):
        nvfp4.quantize(torch.ones(2, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="x must be 2-D"):
        nvfp4.quantize(torch.ones(16))
    with pytest.raises(ValueError, match=r"x.shape\[1\] \(K\) must be a positive multiple of 16, got 24"):
        nvfp4.quantize(torch.ones(2, 24))
    with pytest.raises(ValueError, match="recipe must be one of"):
        nvfp4.quantize(torch.ones(2, 16), recipe="torchao")
    with pytest.raises(ValueError, match="amax must be finite and > 0"):
        nvfp4.quantize(torch.zeros(2, 16))
    with pytest.raises(ValueError, match="amax must be finite and > 0"):
        nvfp4.quantize(torch.ones(2, 16), amax=float("nan"))
    with pytest.raises(ValueError, match="amax must be a single value"):
        nvfp4.quantize(torch.ones(2, 16), amax=torch.ones(2))


def test_format_helpers_reject_bad_input():
    with pytest.raises(TypeError, match="codes must be uint8"):
        nvfp4.pack_e2m1(torch.ones(4))
    with pytest.raises(ValueError, match="last dimension of codes must be even"):
        nvfp4.pack_e2m1(torch.ones(3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="packed must be uint8"):
        nvfp4.unpack_e2m1(torch.ones(4))
    with pytest.raises(TypeError, match="t must be an NvFp4Tensor"):
        nvfp4.dequantize(torch.ones(4))


def test_layer_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="in_features must be a positive multiple of 16, got 20"):
        NvFp4Linear(20, 8)
    with pytest.raises(ValueError, match="out_features must be an integer >= 1"):
        NvFp4Linear(16, 0)
    with pytest.raises(TypeError, match="dtype must be torch.bfloat16 or torch.float16"):
        NvFp4Linear(16, 8, dtype=torch.float32)
    with pytest.raises(ValueError, match="activation must be one of"):
        NvFp4Linear(16, 8, activation="dynamic-tensor")
    with pytest.raises(ValueError, match="backend must be one of"):
        NvFp4Linear(16, 8, backend="cublas")
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        NvFp4Linear.from_linear(nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="input_amax must be finite and > 0"):
        NvFp4Linear.from_linear(nn.Linear(16, 8), input_amax=0.0)
    with pytest.raises(ValueError, match="activation='static' needs input_amax"):
        NvFp4Linear.from_linear(nn.Linear(16, 8), activation="static")


def test_forward_rejects_bad_input():
    layer = NvFp4Linear(32, 8)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        layer([1.0])
    with pytest.raises(TypeError, match="x must have dtype bfloat16, float16; got float32"):
        layer(torch.ones(2, 32))
    with pytest.raises(ValueError, match=r"x must have shape \[..., 32\], got \(2, 16\)"):
        layer(torch.ones(2, 16, dtype=torch.bfloat16))


def test_forward_accepts_unaligned_and_strided_views():
    layer = NvFp4Linear.from_linear(nn.Linear(32, 8, dtype=torch.bfloat16))
    base = torch.randn(4, 40, dtype=torch.bfloat16)
    view = base[:, 3:35]
    assert torch.equal(layer(view), layer(view.contiguous()))


def test_ops_reject_bad_input():
    with pytest.raises(TypeError, match="x must have dtype bfloat16, float16"):
        ops.quantize_activations_dequant_impl(torch.ones(2, 16), None)
    with pytest.raises(ValueError, match="x must be 2-D"):
        ops.quantize_activations_nvfp4_impl(torch.ones(16, dtype=torch.bfloat16), None)
    with pytest.raises(ValueError, match="multiple of 16"):
        ops.quantize_activations_nvfp4_impl(torch.ones(2, 8, dtype=torch.bfloat16), None)
    with pytest.raises(ValueError, match="static_scale must hold one value"):
        ops.quantize_activations_nvfp4_impl(torch.ones(2, 16, dtype=torch.bfloat16), torch.ones(2))
    with pytest.raises(TypeError, match="static_scale must have dtype float32"):
        ops.quantize_activations_nvfp4_impl(torch.ones(2, 16, dtype=torch.bfloat16), torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="unit stride along K"):
        ops.quantize_activations_nvfp4_impl(torch.ones(16, 2, dtype=torch.bfloat16).t(), None)
    act = torch.ones(2, 32, dtype=torch.bfloat16)
    w = torch.zeros(4, 16, dtype=torch.uint8)
    ws = torch.zeros(4, 2, dtype=torch.uint8)
    alpha = torch.ones(1)
    with pytest.raises(ValueError, match=r"w_packed must have shape \(4, 16\)"):
        mm_reference_impl(act, w[:, :8], ws, alpha, None, torch.bfloat16)
    with pytest.raises(ValueError, match=r"w_scale must have shape \(4, 2\)"):
        mm_reference_impl(act, w, ws[:, :1], alpha, None, torch.bfloat16)
    with pytest.raises(ValueError, match="alpha must hold 1 or M=2 values"):
        mm_reference_impl(act, w, ws, torch.ones(3), None, torch.bfloat16)
    with pytest.raises(TypeError, match="bias must have dtype bfloat16"):
        mm_reference_impl(act, w, ws, alpha, torch.ones(4), torch.bfloat16)
    with pytest.raises(TypeError, match="out_dtype must be bfloat16 or float16"):
        mm_reference_impl(act, w, ws, alpha, None, torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_specific_errors():
    x = torch.ones(2, 32, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="static_scale is on cpu but x is on cuda"):
        ops.quantize_activations_nvfp4_impl(x, torch.ones(1))
    unaligned = torch.randn(2 * 32 + 1, dtype=torch.bfloat16, device="cuda")[1:].view(2, 32)
    for a, b in zip(ops.quantize_activations_nvfp4_impl(unaligned, None),
                    ops.quantize_activations_nvfp4_impl(unaligned.clone(), None)):
        assert torch.equal(a, b)  # an odd offset is copied to an aligned buffer, not rejected
    layer = NvFp4Linear(32, 8)
    with pytest.raises(ValueError, match="x is on cuda:0 but the layer's weights are on cpu"):
        layer(x)
