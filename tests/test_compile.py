"""torch.compile and torch.library.opcheck over the custom ops and NvFp4Linear."""

import pytest
import torch
from torch import nn

from nvfp4 import NvFp4Linear, ops
from nvfp4.backends.reference import mm_reference
from nvfp4.backends.sm90 import ACT_BF16, ACT_QUANT_PER_TOKEN, ACT_QUANT_STATIC, linear_sm90
from conftest import wide_spread

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class TwoLayer(nn.Module):
    def __init__(self, batch_invariant: bool):
        super().__init__()
        torch.manual_seed(0)
        self.up = NvFp4Linear.from_linear(nn.Linear(64, 96, dtype=torch.bfloat16), batch_invariant=batch_invariant)
        self.down = NvFp4Linear.from_linear(
            nn.Linear(96, 48, dtype=torch.bfloat16), input_amax=8.0, batch_invariant=batch_invariant
        )
        self.w4a16 = NvFp4Linear.from_linear(nn.Linear(48, 32, dtype=torch.bfloat16), activation="none")

    def forward(self, x):
        return self.w4a16(self.down(torch.relu(self.up(x))))


def test_compile_fullgraph_has_no_breaks_and_equal_bits():
    torch._dynamo.reset()
    model = TwoLayer(batch_invariant=True)
    x = wide_spread(13, 64, seed=1)
    eager = model(x)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True)
    assert torch.equal(compiled(x), eager)
    # a new batch size must not change any row
    x2 = torch.cat([x, wide_spread(5, 64, seed=2)])
    assert torch.equal(compiled(x2)[:13], eager)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_quantizer_ops(device):
    x = wide_spread(9, 48, seed=3).to(device)
    for static in (None, torch.tensor([0.25], device=device)):
        for mult in (None, torch.tensor([1.5], device=device)):
            torch.library.opcheck(ops.quantize_activations_nvfp4, (x, static, mult))
            torch.library.opcheck(ops.quantize_activations_dequant, (x, static, mult))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_reference_gemm(device):
    layer = NvFp4Linear.from_linear(nn.Linear(48, 8, dtype=torch.bfloat16)).to(device)
    weight, weight_scale = layer.modelopt_weights()  # the reference op's operands (a kernel backend's layout differs)
    act = wide_spread(5, 48, seed=4).to(device)
    alpha = torch.ones(5, device=device)
    for bias in (None, torch.randn(8, dtype=torch.bfloat16, device=device)):
        torch.library.opcheck(mm_reference, (act, weight, weight_scale.view(torch.uint8), alpha, bias, torch.bfloat16))


def test_opcheck_invariant_bf16_linear():
    from nvfp4.invariant_ops import linear_invariant

    x = wide_spread(5, 48, seed=6)
    w = torch.randn(8, 48, dtype=torch.bfloat16)
    for bias in (None, torch.randn(8, dtype=torch.bfloat16)):
        torch.library.opcheck(linear_invariant, (x, w, bias))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9, reason="needs a Hopper GPU")
def test_opcheck_sm90_linear():
    layer = NvFp4Linear.from_linear(nn.Linear(256, 64, dtype=torch.bfloat16)).cuda()
    x = wide_spread(5, 256, seed=7).cuda()
    for invariant in (True, False):
        for alpha in (torch.ones(1, device="cuda"), torch.rand(5, device="cuda")):
            torch.library.opcheck(linear_sm90, (x, layer.weight, alpha, None, layer.bias, ACT_BF16, invariant, 64))
        ws2 = torch.full((1,), 0.5, device="cuda")
        torch.library.opcheck(linear_sm90, (x, layer.weight, ws2, None, layer.bias, ACT_QUANT_PER_TOKEN, invariant, 64))
        torch.library.opcheck(linear_sm90, (x, layer.weight, ws2, torch.full((1,), 0.01, device="cuda"), layer.bias,
                                            ACT_QUANT_STATIC, invariant, 64))
