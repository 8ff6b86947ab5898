"""Bytes and arguments entering NvFp4Linear are validated where they come in: global scales finite and > 0, block
scales finite and non-negative, flags and sizes of their own types; each error names the tensor or argument and the
rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nvfp4
from nvfp4 import NvFp4Linear
from conftest import wide_spread


def _state(activation: str = "static") -> dict[str, torch.Tensor]:
    lin = nn.Linear(64, 24, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(wide_spread(24, 64, seed=0))
    kwargs = {"input_amax": 7.0} if activation == "static" else {"activation": activation}
    return NvFp4Linear.from_linear(lin, **kwargs).state_dict()


BAD_GLOBAL = {"nan": float("nan"), "inf": float("inf"), "zero": 0.0, "negative": -0.25}


@pytest.mark.parametrize("key", ["weight_scale_2", "input_scale"])
@pytest.mark.parametrize("value", list(BAD_GLOBAL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_load_state_dict_refuses_bad_global_scales(key, value, dtype):
    sd = _state()
    sd[key] = torch.tensor(BAD_GLOBAL[value], dtype=dtype)
    layer = NvFp4Linear(64, 24, activation="static")
    before = layer.state_dict()
    with pytest.raises(ValueError, match=rf"load_state_dict: {key} must be finite and > 0"):
        layer.load_state_dict(sd)
    assert all(torch.equal(before[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8))
               for k, v in layer.state_dict().items())  # nothing was loaded


@pytest.mark.parametrize("byte, rule", [(0x7F, "NaN"), (0xFF, "NaN"), (0xB8, "negative"), (0x80, "negative")])
def test_load_state_dict_refuses_nan_and_negative_block_scales(byte, rule):
    sd = _state()
    scales = sd["weight_scale"].view(torch.uint8).clone()
    scales[5, 2] = byte
    sd["weight_scale"] = scales.view(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=rf"weight_scale must hold finite, non-negative e4m3 block scales; 1 are "
                                         rf"{rule}.*index \(5, 2\), byte 0x{byte:02X}"):
        NvFp4Linear(64, 24, activation="static").load_state_dict(sd)


def test_good_state_still_loads_zero_block_scales_included():
    sd = _state()
    scales = sd["weight_scale"].view(torch.uint8).clone()
    scales[0, 0] = 0x00  # a zero block scale is a valid (all-zero) block
    sd["weight_scale"] = scales.view(torch.float8_e4m3fn)
    layer = NvFp4Linear(64, 24, activation="static")
    layer.load_state_dict(sd)
    assert layer.weight_scale.view(torch.uint8)[0, 0] == 0


def test_global_scale_of_wrong_shape_names_both_accepted_shapes():
    sd = _state()
    sd["weight_scale_2"] = torch.ones(2)
    with pytest.raises(ValueError, match=r"weight_scale_2 must hold one value \(shape \(\) or \[1\]\), got shape \(2,\)"):
        NvFp4Linear(64, 24, activation="static").load_state_dict(sd)


def test_state_dict_values_must_be_tensors():
    sd = dict(_state(), weight_scale_2=0.5)
    with pytest.raises(TypeError, match="weight_scale_2 must be a torch.Tensor, got float"):
        NvFp4Linear(64, 24, activation="static").load_state_dict(sd)


def test_from_quantized_validates_scales():
    q = nvfp4.quantize(wide_spread(24, 64, seed=0))
    bad = nvfp4.NvFp4Tensor(q.data, q.scale, torch.tensor(-1.0))
    with pytest.raises(ValueError, match="weight_scale_2 must be finite and > 0"):
        NvFp4Linear.from_quantized(bad)
    with pytest.raises(ValueError, match="input_scale must be finite and > 0"):
        NvFp4Linear.from_quantized(q, input_scale=float("nan"))
    with pytest.raises(TypeError, match="input_scale must be a number or a one-element tensor, got str"):
        NvFp4Linear.from_quantized(q, input_scale="0.1")
    with pytest.raises(TypeError, match="q.scale must be a torch.Tensor"):
        NvFp4Linear.from_quantized(nvfp4.NvFp4Tensor(q.data, None, q.global_scale))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(in_features=16, out_features=True), TypeError, "out_features must be an int, got bool"),
    (dict(in_features=16.0, out_features=8), TypeError, "in_features must be an int, got float"),
    (dict(in_features="16", out_features=8), TypeError, "in_features must be an int, got str"),
    (dict(in_features=16, out_features=8, bias="yes"), TypeError, "bias must be True or False, got str"),
    (dict(in_features=16, out_features=8, batch_invariant="no"), TypeError,
     "batch_invariant must be True or False, got str"),
    (dict(in_features=16, out_features=8, batch_invariant=1), TypeError, "batch_invariant must be True or False, got int"),
])
def test_constructor_checks_argument_types(kwargs, error, message):
    with pytest.raises(error, match=message):
        NvFp4Linear(**kwargs)


@pytest.mark.parametrize("amax, error, message", [
    (torch.ones(2), ValueError, r"input_amax must hold one value, got shape \(2,\)"),
    ("4.0", TypeError, "input_amax must be a number or a one-element tensor, got str"),
    ([4.0], TypeError, "input_amax must be a number or a one-element tensor, got list"),
    (True, TypeError, "input_amax must be a number or a one-element tensor, got bool"),
    (torch.tensor(float("inf")), ValueError, "input_amax must be finite and > 0"),
])
def test_from_linear_checks_input_amax(amax, error, message):
    with pytest.raises(error, match=message):
        NvFp4Linear.from_linear(nn.Linear(16, 8), input_amax=amax)
    assert NvFp4Linear.from_linear(nn.Linear(16, 8), input_amax=torch.tensor([4.0])).input_scale.shape == ()


def test_from_linear_checks_flags():
    with pytest.raises(TypeError, match="batch_invariant must be True or False"):
        NvFp4Linear.from_linear(nn.Linear(16, 8), batch_invariant="no")


def test_quantize_detaches_parameters():
    """A Parameter (requires_grad) quantizes without a warning and without a graph behind the result."""
    param = nn.Parameter(wide_spread(8, 32, seed=3, dtype=torch.float32))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = nvfp4.quantize(param)
    for t in (q.data, q.scale, q.global_scale):
        assert t.grad_fn is None and not t.requires_grad
    assert torch.equal(q.data, nvfp4.quantize(param.detach()).data)


def test_save_pretrained_checks_its_arguments(tmp_path):
    from nvfp4.save import _parse_size

    assert _parse_size("5GB") == 5 * 10**9 and _parse_size("200mb") == 2 * 10**8 and _parse_size(1000) == 1000
    for bad, error, message in (("big", ValueError, "max_shard_size 'big' is not a size"),
                                (0, ValueError, "at least 1 byte"), ("-1MB", ValueError, "at least 1 byte"),
                                (True, TypeError, "max_shard_size must be an int"), (1.5, TypeError, "got float")):
        with pytest.raises(error, match=message):
            _parse_size(bad)
    model = nn.Sequential(NvFp4Linear.from_linear(nn.Linear(16, 8), input_amax=1.0))
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file; pass a folder"):
        nvfp4.save_pretrained(model, tmp_path / "file")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        nvfp4.save_pretrained({"weight": 1}, tmp_path / "out")
    with pytest.raises(ValueError, match="max_shard_size 'lots' is not a size"):
        nvfp4.save_pretrained(model, tmp_path / "out", max_shard_size="lots")


def test_load_state_dict_checks_the_bias():
    sd = _state()
    for bias, error, message in ((torch.zeros(25, dtype=torch.bfloat16), ValueError, r"bias must have shape \(24,\)"),
                                 (torch.zeros(24, dtype=torch.int32), TypeError, "bias must be a floating-point"),
                                 ([0.0] * 24, TypeError, "bias must be a torch.Tensor")):
        with pytest.raises(error, match=message):
            NvFp4Linear(64, 24, activation="static").load_state_dict(dict(sd, bias=bias))
    with pytest.raises(ValueError, match="layer was built with bias=False"):
        NvFp4Linear(64, 24, bias=False, activation="static").load_state_dict(sd)
    layer = NvFp4Linear(64, 24, activation="static")
    layer.load_state_dict(dict(sd, bias=sd["bias"].float()))  # another float dtype: cast to the layer's, as nn.Linear
    assert layer.bias.dtype == torch.bfloat16 and torch.equal(layer.bias, sd["bias"])


def test_dequantize_checks_its_tensor():
    q = nvfp4.quantize(wide_spread(4, 32, seed=2))
    with pytest.raises(ValueError, match=r"t.scale must have shape \(4, 2\), got \(4, 1\)"):
        nvfp4.dequantize(nvfp4.NvFp4Tensor(q.data, q.scale[:, :1], q.global_scale))
    with pytest.raises(TypeError, match="t.data must have dtype uint8"):
        nvfp4.dequantize(nvfp4.NvFp4Tensor(q.data.float(), q.scale, q.global_scale))
    with pytest.raises(ValueError, match="t.global_scale must hold one value"):
        nvfp4.dequantize(nvfp4.NvFp4Tensor(q.data, q.scale, torch.ones(2)))
    raw = nvfp4.NvFp4Tensor(q.data, q.scale.view(torch.uint8), q.global_scale)  # uint8 scale bytes are accepted
    assert torch.equal(nvfp4.dequantize(raw), nvfp4.dequantize(q))
