"""The reference GEMM: batch invariant by construction, and accurate against float64."""

import pytest
import torch

import nvfp4
from nvfp4.activation import quantize_activations_reference
from nvfp4.reference import accumulate, dequantize_weight_blocks, gemm_reference
from conftest import wide_spread


def _weights(n, k, seed):
    q = nvfp4.quantize(wide_spread(n, k, seed=seed), recipe="modelopt")
    return q.data, q.scale.view(torch.uint8), q.global_scale


@pytest.mark.parametrize("n,k,seed", [(37, 208, 0), (61, 48, 1)])  # K % 32 == 16, N not a multiple of 8
def test_every_m_from_1_to_300_matches_rows_computed_alone(n, k, seed):
    w, ws, ws2 = _weights(n, k, seed)
    pool = wide_spread(300, k, seed=seed + 100)
    act, _ = quantize_activations_reference(pool, None)[2:]
    alpha = torch.exp2(torch.randint(-6, 6, (300,)).float()) * ws2
    bias = torch.randn(n, dtype=torch.bfloat16)
    alone = torch.cat([gemm_reference(act[i : i + 1], w, ws, alpha[i : i + 1], bias, torch.bfloat16) for i in range(300)])
    alone_fp32 = torch.cat([accumulate(act[i : i + 1].float(), dequantize_weight_blocks(w, ws)) for i in range(300)])
    gen = torch.Generator().manual_seed(seed)
    for m in range(1, 301):
        rows = torch.randperm(300, generator=gen)[:m]  # random rows at random positions
        out = gemm_reference(act[rows], w, ws, alpha[rows], bias, torch.bfloat16)
        assert torch.equal(out, alone[rows]), f"M={m}: rows differ from their M=1 results"
        if m in (1, 17, 129, 300):
            assert torch.equal(accumulate(act[rows].float(), dequantize_weight_blocks(w, ws)), alone_fp32[rows])


def test_invariance_is_not_vacuous_reordering_changes_bits():
    """With these spreads a different summation order (torch.matmul) changes bits, so the test above can fail."""
    w, ws, _ = _weights(37, 208, 0)
    act = quantize_activations_reference(wide_spread(64, 208, seed=5), None)[2].float()
    ours = accumulate(act, dequantize_weight_blocks(w, ws))
    other = act @ dequantize_weight_blocks(w, ws).t()
    assert not torch.equal(ours, other)


@pytest.mark.parametrize("m,n,k", [(5, 33, 16), (17, 64, 1008), (9, 40, 4096)])
def test_against_float64(m, n, k):
    w, ws, ws2 = _weights(n, k, m)
    act = quantize_activations_reference(wide_spread(m, k, seed=m + 7), None)[2]
    wd = dequantize_weight_blocks(w, ws)
    alpha = torch.full((m,), 0.37) * ws2
    ours = accumulate(act.float(), wd) * alpha.reshape(-1, 1)
    exact = (act.double() @ wd.double().t()) * alpha.double().reshape(-1, 1)
    rel = (ours.double() - exact).norm() / exact.norm()
    assert rel <= 1e-6, rel
    assert torch.isfinite(ours).all()


def test_bias_and_alpha_applied_once_then_rounded():
    w, ws, _ = _weights(8, 32, 3)
    act = torch.randn(3, 32).to(torch.bfloat16)
    bias = torch.randn(8, dtype=torch.float16)
    alpha = torch.tensor([2.0])
    out = gemm_reference(act, w, ws, alpha, bias, torch.float16)
    acc = accumulate(act.float(), dequantize_weight_blocks(w, ws))
    assert out.dtype == torch.float16
    assert torch.equal(out, (acc * 2.0 + bias.float()).to(torch.float16))
