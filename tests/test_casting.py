"""Module casts (.to(dtype), .half(), .bfloat16(), .float(), .double(), .type()) never change NvFp4Linear's quantized
bytes: bf16/fp16 casts move the activation/output dtype and the bias, fp32/fp64 casts are refused before anything
changes, and the layer keeps working either way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nvfp4
from nvfp4 import NvFp4Linear
from nvfp4.linear import QUANTIZED_BUFFERS, CastError
from conftest import fixture_dir, wide_spread


def _layer(activation: str = "static") -> NvFp4Linear:
    lin = nn.Linear(64, 24, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(wide_spread(24, 64, seed=0))
    kwargs = {"input_amax": 7.0} if activation == "static" else {"activation": activation}
    return NvFp4Linear.from_linear(lin, **kwargs)


def _quantized_bytes(module: nn.Module) -> dict[str, tuple[torch.dtype, bytes]]:
    """Every quantized tensor of every NvFp4Linear in `module`: (dtype, raw bytes) in the ModelOpt layout."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, NvFp4Linear):
            for key, value in m.state_dict().items():
                if key in QUANTIZED_BUFFERS:
                    out[f"{name}.{key}"] = (value.dtype, value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return out


CASTS = {
    "to(bf16)": lambda m: m.to(torch.bfloat16),
    "to(fp16)": lambda m: m.to(torch.float16),
    "half": lambda m: m.half(),
    "bfloat16": lambda m: m.bfloat16(),
    "type(fp16)": lambda m: m.type(torch.float16),
    "to(cpu, fp16)": lambda m: m.to("cpu", torch.float16),
    "to(tensor)": lambda m: m.to(torch.empty(0, dtype=torch.float16)),
}


@pytest.mark.parametrize("cast", list(CASTS))
def test_half_precision_casts_keep_quantized_bytes_and_move_the_activation_dtype(cast):
    layer = _layer()
    before = _quantized_bytes(layer)
    x = wide_spread(5, 64, seed=1)
    want = layer(x)
    out = CASTS[cast](layer)
    assert out is layer
    assert _quantized_bytes(layer) == before
    target = torch.bfloat16 if "bf16" in cast or cast == "bfloat16" else torch.float16
    assert layer.dtype == target and layer.bias.dtype == target
    assert layer(x.to(target)).dtype == target
    layer.to(torch.bfloat16)  # and back: the same bytes, the same outputs
    assert _quantized_bytes(layer) == before
    assert torch.equal(layer(x), want)


@pytest.mark.parametrize("cast", [lambda m: m.float(), lambda m: m.double(), lambda m: m.to(torch.float32),
                                  lambda m: m.type(torch.float64), lambda m: m.type(torch.int8)],
                         ids=["float", "double", "to(fp32)", "type(fp64)", "type(int8)"])
def test_casts_the_kernels_cannot_serve_are_refused_and_change_nothing(cast):
    layer = _layer()
    before = _quantized_bytes(layer)
    x = wide_spread(5, 64, seed=1)
    want = layer(x)
    with pytest.raises(CastError, match=r"cannot cast the layer to torch\.(float32|float64|int8).*bfloat16 or float16"):
        cast(layer)
    assert isinstance(CastError("x"), TypeError)
    assert _quantized_bytes(layer) == before and layer.dtype == torch.bfloat16 and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer(x), want)


def test_device_moves_and_memory_transforms_keep_bytes():
    layer = _layer("per-token")
    before = _quantized_bytes(layer)
    layer.cpu()
    layer.share_memory()
    assert layer.weight.is_shared() and layer.weight.dtype == torch.uint8
    assert _quantized_bytes(layer) == before
    empty = _layer().to_empty(device="meta")  # Module.to_empty: a device move without data
    assert empty.weight.device.type == "meta" and empty.weight_scale.dtype == torch.float8_e4m3fn
    assert empty.weight_scale_2.dtype == torch.float32


@pytest.mark.parametrize("name", ["modelopt-nvfp4"])
def test_loaded_model_round_trips_bf16_fp16_fp32_without_changing_a_byte(name):
    """A whole model: to fp16 and back keeps every quantized byte; model.float() is refused at the first NvFp4Linear
    (modules torch visited before it are already fp32, as the error says), and the quantized bytes are unchanged;
    a cast back to bf16 gives a working model."""
    pytest.importorskip("transformers")
    model = nvfp4.from_pretrained(fixture_dir(name))
    before = _quantized_bytes(model)
    ids = torch.randint(4, 29, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids).logits
    model.to(torch.float16)
    assert _quantized_bytes(model) == before
    assert all(m.dtype == torch.float16 for m in model.modules() if isinstance(m, NvFp4Linear))
    with torch.no_grad():
        assert model(ids).logits.dtype == torch.float16
    with pytest.raises(CastError, match="whole-model cast"):
        model.float()
    assert _quantized_bytes(model) == before
    with pytest.raises(CastError):
        model.to(torch.float32)
    model.to(torch.bfloat16)
    assert _quantized_bytes(model) == before
    with torch.no_grad():
        got = model(ids).logits
    # Every bf16 parameter went bf16 -> fp16/fp32 -> bf16; the fixture's values are fp16-exact except where they are
    # not, so the logits are compared as close, while the quantized state above is compared byte for byte.
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert torch.nn.functional.cosine_similarity(got.float().flatten(), want.float().flatten(), dim=0) > 0.999
