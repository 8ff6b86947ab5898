"""The Hopper layer on the device: bitwise batch invariance (every M 1..300, powers of two to 8192, rows moved), the
same bits from every plan (split reduction, fused or standalone quantizer, SM count), the fused quantizer's bytes,
accuracy vs float64, CUDA graphs, torch.compile, resident memory, bad input.

Skips without a Hopper GPU. tools/device_run.sh runs it on the lent GPU; logs go under bench/results/.
"""

import pytest
import torch

from nvfp4 import NvFp4Linear, ops
from nvfp4.activation import quantize_activations_reference
from nvfp4.backends import sm90
from nvfp4.backends.sm90 import ACT_BF16, ACT_QUANT_PER_TOKEN, linear_sm90_impl, planning
from nvfp4.reference import dequantize_weight_blocks
from conftest import requires_cuda
from gpu_data import random_layer, random_rows

pytestmark = [requires_cuda, pytest.mark.gpu]

# llama-3.1-8b and llama-3.1-70b (bench/presets.txt)
PRESET_SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336),
                 (10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)]
ODD_SHAPES = [(160, 2048), (352, 1984), (320, 1008), (1000, 4000), (24, 80)]
EVERY_M = list(range(1, 301)) + [512, 1024, 2048, 4096, 8192]


@pytest.fixture(scope="module", autouse=True)
def _hopper():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the sm_90a kernels need a compute capability 9.0 GPU")


def _check_invariance(layer: NvFp4Linear, k: int, m_values, seed: int) -> int:
    """Every row of each M-row call (M <= 300) or its first 300 and 40 random rows (larger M) equals the same row
    computed alone (M = 1); rows moved by one position give the moved outputs."""
    m_max = max(m_values)
    pool = random_rows(m_max, k, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    extra = sorted(set(torch.randint(300, m_max, (40,), generator=gen).tolist())) if m_max > 300 else []
    probe = list(range(min(300, m_max))) + extra
    alone = {r: layer(pool[r: r + 1]) for r in probe}
    checked = 0
    for m in m_values:
        out = layer(pool[:m])
        rows = [r for r in probe if r < m]
        want = torch.cat([alone[r] for r in rows])
        bad = (out[rows] != want).any(dim=1).nonzero().flatten().tolist()
        assert not bad, f"M={m}: rows {[rows[i] for i in bad][:10]} differ from the same rows computed alone"
        if m > 1 and (m <= 64 or m in (65, 129, 257, 300, 1024)):
            rolled = layer(torch.roll(pool[:m], 1, dims=0))
            assert torch.equal(torch.roll(rolled, -1, dims=0), out), f"M={m}: a row's result depends on its position"
        checked += len(rows)
    return checked


@pytest.mark.parametrize("n,k", PRESET_SHAPES + ODD_SHAPES)
def test_every_m_is_bitwise_equal_to_m1_row_by_row(n, k):
    layer = random_layer(n, k, seed=n + k)
    m_values = EVERY_M if n * k <= 8192 * 8192 or n * k == 8192 * 28672 else [m for m in EVERY_M if m <= 4096]
    assert _check_invariance(layer, k, m_values, seed=n * 7 + k) > 40000


@pytest.mark.parametrize("activation", ["static", "none"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_static_and_w4a16_are_invariant(activation, dtype):
    if activation == "none" and dtype == torch.float16:
        pytest.skip("W4A16 on sm90 takes bf16 activations")
    layer = random_layer(4096, 4096, seed=3, activation=activation, dtype=dtype)
    _check_invariance(layer, 4096, [1, 2, 3, 8, 9, 16, 17, 33, 64, 65, 129, 257, 1000], seed=5)


def test_negative_control_fast_mode_differs():
    """The invariance check can fail: fast mode (one chunk above 64 rows) and cuBLAS differ somewhere."""
    layer = random_layer(8192, 8192, seed=11, batch_invariant=False)
    x = random_rows(1000, 8192, seed=12)
    out = layer(x)
    alone = torch.cat([layer(x[r: r + 1]) for r in range(0, 1000, 37)])
    assert not torch.equal(out[0:1000:37], alone), "fast mode unexpectedly matched its M=1 rows"
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    xs = random_rows(2048, 4096, seed=13)
    assert not torch.equal((xs @ w.t())[:4], xs[:4] @ w.t()), "cuBLAS unexpectedly invariant here"


# Shapes whose small-M calls split their chunks over CTAs on a 132-SM GPU; N % 128 != 0 for 2112, 1000 and 3000, and
# K = 4000 ends in a partial chunk and a partial 64-k group.
PLAN_SHAPES = [(6144, 4096), (4096, 4096), (10240, 8192), (8192, 8192), (4096, 14336), (2112, 7168),
               (1000, 8192), (1000, 4000), (3000, 2048), (24, 80)]
PLAN_M_VALUES = [1, 2, 5, 8, 9, 16, 17, 31, 32, 33, 63, 64, 65]
PLANS = [dict(), dict(split_reduce="kernel"), dict(split_reduce="cluster"), dict(fused="never"), dict(fused="always"),
         dict(sm_count=132), dict(sm_count=114), dict(sm_count=78), dict(sm_count=16), dict(sm_count=264),
         dict(pdl=True), dict(pdl=True, split_reduce="kernel")]


@pytest.mark.parametrize("n,k", PLAN_SHAPES)
@pytest.mark.parametrize("activation", ["per-token", "static"])
def test_every_plan_gives_the_same_bits(n, k, activation):
    """However the calls are planned (chunks split over a cluster or over partials and a second kernel, activations
    quantized inside the GEMM or apart, as if the GPU had 132, 114, 78, 16 or 264 SMs), every output element is the
    same and written. The chunk rule does not depend on the SM count, so another Hopper GPU computes these bits."""
    layer = random_layer(n, k, seed=n + 3 * k, activation=activation)
    plans_seen = set()
    for m in PLAN_M_VALUES:
        x = random_rows(m, k, seed=m * 31 + n)
        want = layer(x)
        for options in PLANS:
            poison = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
            del poison  # the allocator hands this NaN-filled block to the next output of this size
            try:
                with planning(**options):
                    plan = sm90.plan(m, n, k, activation)
                    got = layer(x)
            except ValueError as err:  # clusters above the portable 8 CTAs may be unschedulable
                assert options.get("split_reduce") == "cluster" and "cannot schedule a cluster" in str(err), err
                continue
            plans_seen.add((plan.splits, plan.reduce, plan.fused))
            assert not torch.isnan(got).any(), f"M={m} {options} ({plan}): output elements left unwritten"
            assert torch.equal(got, want), f"M={m} {options} ({plan}): the bits changed with the plan"
    assert any(r == "cluster" for _, r, _ in plans_seen) or n * k < 2 ** 20, plans_seen
    assert any(f for _, _, f in plans_seen) and any(not f for _, _, f in plans_seen), plans_seen


def test_chunk_rule_does_not_depend_on_the_sm_count():
    for sms in (132, 114, 78, 16):
        with planning(sm_count=sms):
            for n, k in PRESET_SHAPES:
                for m in (1, 16, 64, 65, 4096):
                    from nvfp4.chunking import chunk_k
                    assert sm90.plan(m, n, k).chunk_k == chunk_k(n, k), (sms, n, k, m)


@pytest.mark.parametrize("n,k,m", [(4096, 4096, 1), (6144, 4096, 7), (1000, 4000, 16), (24, 80, 3), (8192, 8192, 64),
                                   (4096, 4096, 300)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ["per-token", "static"])
def test_layer_equals_standalone_quantizer_plus_bf16_gemm(n, k, m, dtype, activation):
    """One call per layer (quantizer fused or inside the C call) equals the standalone quantizer's exact dequantized
    activations and alphas fed to the GEMM alone: the quantized bytes are the quantizer's."""
    layer = random_layer(n, k, seed=n + m, activation=activation, dtype=dtype)
    x = random_rows(m, k, seed=m + 5, dtype=dtype)
    static = layer.input_scale.reshape(1) if activation == "static" else None
    act, alpha = ops.quantize_activations_dequant_impl(x, static, layer.weight_scale_2.reshape(1))
    outs = {}
    for fused in ("always", "never"):
        with planning(fused=fused):
            outs[fused] = layer(x)
    # bit patterns (fp16 outputs of wide-spread rows overflow to inf and NaN, which torch.equal never matches)
    assert torch.equal(outs["always"].view(torch.int16), outs["never"].view(torch.int16)), \
        "the fused quantizer's bytes differ from the standalone one's"
    if dtype == torch.bfloat16:  # the GEMM alone takes bf16 operands and writes bf16
        want = linear_sm90_impl(act, layer.weight, alpha, None, layer.bias, ACT_BF16, True, n)
        assert torch.equal(outs["never"].view(torch.int16), want.view(torch.int16)), "the layer differs from quantizer + GEMM"


@pytest.mark.parametrize("n,k,m", [(160, 2048, 1), (352, 1984, 17), (320, 1008, 257), (4096, 4096, 65),
                                   (4096, 14336, 4), (8192, 8192, 1000), (1000, 4000, 9)])
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_accuracy_against_float64_and_every_element_written(n, k, m, out_dtype):
    layer = random_layer(n, k, seed=m + n, dtype=out_dtype, activation="static")
    layer.weight_scale_2.fill_(1e-6)  # keeps |out| within fp16 range for these wide-spread operands
    x = random_rows(m, k, seed=m * 3, dtype=out_dtype).clamp(-30, 30)
    poison = torch.full((m, n), float("nan"), dtype=out_dtype, device="cuda")
    del poison  # the allocator hands this NaN-filled block to the output next
    out = layer(x)
    assert not torch.isnan(out).any(), "an output element was not written"
    _, _, act, s2 = quantize_activations_reference(x, layer.input_scale.reshape(1))
    weight, weight_scale = layer.modelopt_weights()
    w = dequantize_weight_blocks(weight, weight_scale.view(torch.uint8))
    ref = (act.double() @ w.double().t()) * (s2.double() * layer.weight_scale_2.double()).reshape(-1, 1) + layer.bias.double()
    ref_rounded = ref.to(out_dtype).double()
    rel = ((out.double() - ref_rounded).norm() / ref_rounded.norm()).item()
    assert rel <= 1e-3, rel
    if out_dtype == torch.float16:  # fine enough rounding to compare with the unrounded value too
        assert ((out.double() - ref).norm() / ref.norm()).item() <= 1e-3


def test_cuda_graph_replay_and_compile_are_bitwise_equal_to_eager():
    layer = random_layer(4096, 4096, seed=21)
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    for m in (1, 5, 17, 64, 257):
        x = random_rows(m, 4096, seed=m)
        eager = layer(x)
        static_x = x.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            layer(static_x)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = layer(static_x)
        static_x.copy_(random_rows(m, 4096, seed=m + 1000))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, layer(static_x)), f"graph replay differs from eager at M={m}"
        assert torch.equal(compiled(x), eager), f"torch.compile differs from eager at M={m}"
        # and a row's bits do not depend on which of these paths ran it
        assert torch.equal(compiled(x[-1:]), eager[-1:])


@pytest.mark.parametrize("n,k", PRESET_SHAPES)
def test_resident_memory_is_at_most_0_57_bytes_per_weight(n, k):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    layer = random_layer(n, k, seed=1, bias=False)
    resident = torch.cuda.memory_allocated() - before
    buffers = sum(b.numel() * b.element_size() for b in layer.buffers())
    assert buffers <= 0.57 * n * k, buffers / (n * k)
    assert resident <= 0.57 * n * k + (1 << 20), resident / (n * k)
    sd = layer.state_dict()  # the ModelOpt form comes back from the runtime layout
    assert sd["weight"].shape == (n, k // 2) and sd["weight_scale"].shape == (n, k // 16)


def test_state_dict_round_trip_through_the_runtime_layout_is_bitwise():
    layer = random_layer(1000, 4000, seed=4, activation="static")
    sd = {key: v.clone() for key, v in layer.state_dict().items()}
    cpu = NvFp4Linear(4000, 1000, activation="static")
    cpu.load_state_dict({key: v.cpu() for key, v in sd.items()})
    back = cpu.cuda()
    for key, v in back.state_dict().items():
        assert torch.equal(v.view(torch.uint8) if v.dtype == torch.float8_e4m3fn else v,
                           sd[key].view(torch.uint8) if v.dtype == torch.float8_e4m3fn else sd[key]), key
    x = random_rows(9, 4000, seed=2)
    assert torch.equal(back(x), layer(x))


def test_linear_op_rejects_bad_input():
    layer = random_layer(256, 256, seed=1)
    act = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    alpha = torch.ones(1, device="cuda")
    with pytest.raises(TypeError, match="x must have dtype bfloat16"):
        linear_sm90_impl(act.half(), layer.weight, alpha, None, None, ACT_BF16, True, 256)
    with pytest.raises(ValueError, match="w_prepacked must have shape"):
        linear_sm90_impl(act, layer.weight[:4], alpha, None, None, ACT_BF16, True, 256)
    with pytest.raises(ValueError, match="alpha is on cpu but x is on cuda"):
        linear_sm90_impl(act, layer.weight, alpha.cpu(), None, None, ACT_BF16, True, 256)
    with pytest.raises(ValueError, match="alpha must hold 1 values"):
        linear_sm90_impl(act, layer.weight, torch.ones(4, device="cuda"), None, None, ACT_QUANT_PER_TOKEN, True, 256)
    with pytest.raises(ValueError, match="split reduction mode must be one of"):
        sm90.set_split_reduce("fast")
    with pytest.raises(ValueError, match="sms must be an integer"):
        sm90.set_sm_count(-1)
