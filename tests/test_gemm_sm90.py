"""Hopper NVFP4 GEMM on the device: bitwise batch invariance, accuracy vs float64, CUDA graphs, torch.compile.

Skips without a Hopper GPU. tools/device_run.sh runs it on the lent H100; logs are committed under bench/results/.
"""

import pytest
import torch

from nvfp4 import NvFp4Linear
from nvfp4.activation import quantize_activations_reference
from nvfp4.reference import dequantize_weight_blocks
from nvfp4.backends.sm90 import forced_split_reduce, mm_sm90_impl
from nvfp4.backends.sm90 import plan as sm90_plan
from conftest import requires_cuda
from gpu_data import random_layer, random_rows

pytestmark = [requires_cuda, pytest.mark.gpu]

BIG_SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336),
              (10240, 8192), (8192, 8192), (57344, 8192), (8192, 28672)]
ODD_SHAPES = [(160, 2048), (352, 1984), (320, 1008)]
M_VALUES = [1, 2, 3, 4, 8, 16, 17, 32, 64, 65, 128, 129, 256, 257, 512, 1000, 1024, 2048, 4096, 8192]


@pytest.fixture(scope="module", autouse=True)
def _hopper():
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the sm_90a kernel needs a Hopper GPU")


def _probe_rows(m: int, gen: torch.Generator) -> torch.Tensor:
    """First, last, tile-boundary and random rows of an M-row batch (at most ~48 rows)."""
    fixed = {0, m - 1} | {r for r in (7, 8, 15, 16, 63, 64, 127, 128, 129, 255, 256, 1000, 4095) if r < m}
    random = torch.randint(0, m, (min(m, 32),), generator=gen).tolist()
    return torch.tensor(sorted(fixed | set(random)), device="cuda")


def _check_invariance(layer: NvFp4Linear, k: int, m_values, seed: int) -> int:
    """Every probed row of each M-row call equals its M=1 result; rows also move to other positions."""
    gen = torch.Generator().manual_seed(seed)
    checked = 0
    for m in m_values:
        x = random_rows(m, k, seed=seed + m)
        out = layer(x)
        rows = _probe_rows(m, gen)
        alone = torch.cat([layer(x[r : r + 1]) for r in rows.tolist()])
        bad = (out[rows] != alone).any(dim=1).nonzero().flatten().tolist()
        assert not bad, f"M={m}: rows {rows[bad].tolist()} differ from the same rows computed alone"
        if m > 1:  # shift every row by one position (another tile, another offset inside the tile)
            rolled = layer(torch.roll(x, 1, dims=0))
            assert torch.equal(torch.roll(rolled, -1, dims=0), out), f"M={m}: a row's result depends on its position"
        checked += rows.numel()
    return checked


@pytest.mark.parametrize("n,k", BIG_SHAPES + ODD_SHAPES)
def test_invariant_mode_is_bitwise_batch_invariant(n, k):
    layer = random_layer(n, k, seed=n + k)
    m_values = M_VALUES if n * k <= 8192 * 8192 else [m for m in M_VALUES if m <= 4096]
    assert _check_invariance(layer, k, m_values, seed=n * 7 + k) > 300


@pytest.mark.parametrize("activation", ["static", "none"])
def test_static_and_w4a16_are_invariant(activation):
    layer = random_layer(4096, 4096, seed=3, activation=activation)
    _check_invariance(layer, 4096, [1, 3, 17, 65, 129, 257, 1000], seed=5)


def test_negative_control_fast_mode_differs():
    """The invariance check can fail: fast mode (M-dependent K split) and cuBLAS differ somewhere."""
    layer = random_layer(8192, 8192, seed=11, batch_invariant=False)
    x = random_rows(1000, 8192, seed=12)
    out = layer(x)
    alone = torch.cat([layer(x[r : r + 1]) for r in range(0, 1000, 37)])
    assert not torch.equal(out[0:1000:37], alone), "fast mode unexpectedly matched its M=1 rows"
    w = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    xs = random_rows(2048, 4096, seed=13)
    assert not torch.equal((xs @ w.t())[:4], xs[:4] @ w.t()), "cuBLAS unexpectedly invariant here"


# Shapes whose small-M calls split K into 3..16 chunks on an H100 (132 SMs); N % 128 != 0 for 2112, 1000 and 3000,
# and K = 4000 ends in a partial chunk.
SPLIT_SHAPES = [(6144, 4096), (4096, 4096), (10240, 8192), (5120, 8192), (5120, 25600), (2112, 7168),
                (36864, 7168), (7168, 18432), (1000, 8192), (1000, 4000), (3000, 2048)]
SPLIT_M_VALUES = [1, 2, 5, 8, 9, 16, 17, 31, 32, 33, 63, 64]


@pytest.mark.parametrize("n,k", SPLIT_SHAPES)
def test_cluster_and_kernel_split_reductions_give_the_same_bits(n, k):
    """The two ways of adding the chunk sums in order (one cluster through DSMEM, or partials + a second kernel)
    give identical outputs, every element written, for every token tile of the split range."""
    layer = random_layer(n, k, seed=n + 3 * k)
    clusters_run = 0
    for m in SPLIT_M_VALUES:
        plan = sm90_plan(m, n, k)
        assert plan.splits > 1 and plan.reduce in ("cluster", "kernel"), plan
        x = random_rows(m, k, seed=m * 31 + n)
        with forced_split_reduce("kernel"):
            assert sm90_plan(m, n, k).reduce == "kernel"
            by_kernel = layer(x)
        poison = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
        del poison  # the allocator hands this NaN-filled block to the next output of this size
        try:
            with forced_split_reduce("cluster"):
                by_cluster = layer(x)
        except ValueError as err:  # only clusters above the portable 8 CTAs may be unschedulable
            assert plan.splits > 8 and "cannot schedule a cluster" in str(err), err
            continue
        clusters_run += 1
        assert not torch.isnan(by_cluster).any(), f"M={m}: the cluster path left output elements unwritten"
        assert torch.equal(by_cluster, by_kernel), f"M={m} ({plan}): cluster and kernel reductions differ"
    assert clusters_run > 0 or sm90_plan(1, n, k).splits > 8


def test_automatic_split_reduction_follows_the_measured_rule():
    """On a 132-SM H100: one kernel (cluster) where all clusters fit at once and the plain grid doubles CTAs up on
    SMs anyway; the partials kernel where clusters would need a second wave or would crowd one GPC."""
    if torch.cuda.get_device_properties(0).multi_processor_count != 132:
        pytest.skip("the expected plans are those of a 132-SM H100")
    expected = {
        (6144, 4096, 1): "cluster", (6144, 4096, 16): "cluster", (7168, 16384, 1): "cluster",
        (6144, 4096, 64): "kernel",  # 48 clusters of 4 at one CTA per SM: 30 fit at once
        (4096, 4096, 1): "kernel",  # 32 clusters of 8: 30 fit at once
        (1000, 8192, 1): "kernel",  # 128 CTAs: the plain grid has one per SM
        (4096, 4096, 65): "none",  # above the split range
    }
    got = {key: sm90_plan(key[2], key[0], key[1]).reduce for key in expected}
    assert got == expected
    with forced_split_reduce("kernel"):
        assert sm90_plan(1, 6144, 4096).reduce == "kernel"
    assert sm90_plan(1, 6144, 4096).reduce == "cluster"


def test_forced_split_reduce_rejects_unknown_modes():
    with pytest.raises(ValueError, match="split reduction mode must be one of"):
        with forced_split_reduce("fast"):
            pass
    from nvfp4 import _lib

    with pytest.raises(ValueError, match="mode must be 0 \\(automatic\\)"):
        _lib.check(_lib.require().nvfp4_sm90_set_split_reduce(7), "nvfp4_sm90_set_split_reduce")


@pytest.mark.parametrize("n,k,m", [(160, 2048, 1), (352, 1984, 17), (320, 1008, 257), (4096, 4096, 65), (4096, 14336, 4), (8192, 8192, 1000)])
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
    for m in (1, 17, 257):
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


def test_gemm_op_rejects_bad_input():
    from nvfp4 import ops

    layer = random_layer(256, 256, seed=1)
    act = torch.randn(4, 256, device="cuda", dtype=torch.bfloat16)
    alpha = torch.ones(1, device="cuda")
    with pytest.raises(TypeError, match="act must have dtype bfloat16"):
        mm_sm90_impl(act.half(), layer.weight, layer.weight_scale, alpha, None, torch.bfloat16, True)
    with pytest.raises(ValueError, match="w_scale must have shape"):
        mm_sm90_impl(act, layer.weight, layer.weight_scale[:100], alpha, None, torch.bfloat16, True)
    with pytest.raises(ValueError, match="alpha is on cpu but act is on cuda"):
        mm_sm90_impl(act, layer.weight, layer.weight_scale, alpha.cpu(), None, torch.bfloat16, True)
