"""NvFp4Linear: construction, ModelOpt state_dict, loading validation, forward semantics and invariance (CPU)."""

import pytest
import torch
from torch import nn

import nvfp4
from nvfp4 import NvFp4Linear
from conftest import wide_spread


def _linear(k, n, seed, bias=True):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(wide_spread(n, k, seed=seed))
    return lin


def test_state_dict_uses_modelopt_names_dtypes_and_shapes():
    layer = NvFp4Linear.from_linear(_linear(64, 24, 0), input_amax=3.0)
    sd = layer.state_dict()
    assert set(sd) == {"weight", "weight_scale", "weight_scale_2", "input_scale", "bias"}
    assert sd["weight"].dtype == torch.uint8 and sd["weight"].shape == (24, 32)
    assert sd["weight_scale"].dtype == torch.float8_e4m3fn and sd["weight_scale"].shape == (24, 4)
    assert sd["weight_scale_2"].dtype == torch.float32 and sd["weight_scale_2"].shape == ()
    assert sd["input_scale"].item() == pytest.approx(3.0 / 2688)
    per_token = NvFp4Linear.from_linear(_linear(64, 24, 0))
    assert "input_scale" not in per_token.state_dict()


def test_weights_equal_nvfp4_quantize():
    lin = _linear(96, 40, 1)
    layer = NvFp4Linear.from_linear(lin)
    q = nvfp4.quantize(lin.weight.detach())
    w, s = layer.modelopt_weights()
    assert torch.equal(w, q.data) and torch.equal(s.view(torch.uint8), q.scale.view(torch.uint8))


def test_load_state_dict_round_trip():
    src = NvFp4Linear.from_linear(_linear(64, 24, 2), input_amax=5.0)
    dst = NvFp4Linear(64, 24, activation="static")
    dst.load_state_dict(src.state_dict())
    x = wide_spread(9, 64, seed=3)
    assert torch.equal(dst(x), src(x))
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key].view(torch.uint8) if value.dtype == torch.float8_e4m3fn else dst.state_dict()[key],
                           value.view(torch.uint8) if value.dtype == torch.float8_e4m3fn else value), key


def test_load_state_dict_rejects_wrong_dtype_and_shape_and_accepts_bf16_scalars():
    src = NvFp4Linear.from_linear(_linear(64, 24, 2)).state_dict()
    dst = NvFp4Linear(64, 24)
    bad = dict(src, weight_scale=src["weight_scale"].float())
    with pytest.raises(TypeError, match="weight_scale must have dtype float8_e4m3fn"):
        dst.load_state_dict(bad)
    bad = dict(src, weight=src["weight"][:, :16])
    with pytest.raises(ValueError, match=r"weight must have shape \(24, 32\)"):
        dst.load_state_dict(bad)
    ok = dict(src, weight_scale_2=src["weight_scale_2"].reshape(1).to(torch.bfloat16))
    dst.load_state_dict(ok)
    assert dst.weight_scale_2.dtype == torch.float32
    with pytest.raises(ValueError, match="activation='static'"):
        dst.load_state_dict(dict(src, input_scale=torch.tensor(1.0)))


@pytest.mark.parametrize("activation", ["static", "per-token", "none"])
def test_forward_matches_float64_of_quantized_operands(activation):
    lin = _linear(208, 37, 4)
    kwargs = {"input_amax": 40.0} if activation == "static" else {"activation": activation}
    layer = NvFp4Linear.from_linear(lin, **kwargs)
    x = wide_spread(11, 208, seed=5).clamp(-40, 40)
    out = layer(x)
    assert out.shape == (11, 37) and out.dtype == torch.bfloat16
    w = nvfp4.dequantize(nvfp4.NvFp4Tensor(*layer.modelopt_weights(), layer.weight_scale_2), torch.float64)
    if activation == "none":
        a = x.double()
    else:
        from nvfp4.activation import quantize_activations_reference
        static = layer.input_scale.reshape(1) if layer.input_scale is not None else None
        _, _, dq, s2 = quantize_activations_reference(x, static)
        a = dq.double() * s2.double().reshape(-1, 1)
    ref = a @ w.t() + lin.bias.double()
    assert (out.double() - ref).norm() / ref.norm() < 1e-2  # bf16 output rounding


def test_layer_is_batch_invariant_on_cpu():
    layer = NvFp4Linear.from_linear(_linear(112, 19, 6), batch_invariant=True)
    pool = wide_spread(64, 112, seed=7)
    alone = torch.cat([layer(pool[i : i + 1]) for i in range(64)])
    for m in (1, 2, 3, 17, 33, 64):
        idx = torch.randperm(64)[:m]
        assert torch.equal(layer(pool[idx]), alone[idx])
    assert torch.equal(layer(pool.reshape(4, 16, 112)).reshape(64, 19), alone)


def test_nan_row_does_not_change_other_rows():
    layer = NvFp4Linear.from_linear(_linear(64, 16, 8), batch_invariant=True)
    x = wide_spread(6, 64, seed=9)
    clean = layer(x)
    x[2, 3] = float("nan")
    x[4, 9] = float("inf")
    dirty = layer(x)
    for r in (0, 1, 3, 5):
        assert torch.equal(dirty[r], clean[r])
    assert torch.isnan(dirty[2]).all()


def test_any_n_and_k_multiple_of_16_and_empty_batch():
    for k, n in ((16, 1), (48, 3), (1008, 7)):
        layer = NvFp4Linear.from_linear(_linear(k, n, k))
        assert layer(wide_spread(2, k, seed=1)).shape == (2, n)
        assert layer(torch.empty(0, k, dtype=torch.bfloat16)).shape == (0, n)


def test_fp16_input_gives_fp16_output():
    layer = NvFp4Linear.from_linear(_linear(64, 8, 10))
    assert layer(torch.randn(3, 64, dtype=torch.float16)).dtype == torch.float16


def test_extra_repr_names_backend_and_mode():
    text = repr(NvFp4Linear(32, 8, batch_invariant=True))
    assert "mode=batch-invariant" in text and "backend=reference" in text and "activation=per-token" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reference_backend_equals_cpu_bits_and_no_silent_fallback():
    from nvfp4 import backends

    lin = _linear(208, 40, 11)
    cpu_layer = NvFp4Linear.from_linear(lin, batch_invariant=True)
    x = wide_spread(33, 208, seed=12)
    gpu_ref = NvFp4Linear.from_linear(lin.cuda(), batch_invariant=True, backend="reference")
    assert torch.equal(gpu_ref(x.cuda()).cpu(), cpu_layer(x))
    found = backends.for_capability(torch.cuda.get_device_capability())
    auto = NvFp4Linear.from_linear(lin.cuda(), batch_invariant=True)
    if found is None or found.name not in backends.compiled_backends():
        with pytest.raises(nvfp4.NoKernelError, match="backend='reference'"):
            auto(x.cuda())
        assert "backend=unavailable" in repr(auto)
