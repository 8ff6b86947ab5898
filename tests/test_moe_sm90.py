"""The Hopper grouped GEMM (nvfp4_sm90_grouped_linear) on the device: every row bitwise equal to its expert's
invariant NvFp4Linear call (the per-expert default of Backend.grouped_forward), for W4A4 per-token and static and
W4A16, bf16 and fp16, ragged, empty and one-expert routings over row counts that straddle every token tile and the
fused-quantizer limit, and a top-8-of-128 layer at every token count 1..300 and the powers of two to 8192; both quantizer paths; a row's bits independent of the other rows; CUDA graphs replayed with new
routings; torch.compile; offsets out of range stay in bounds; bad input.

Skips without a Hopper GPU.
"""

from __future__ import annotations

import pytest
import torch

from nvfp4.moe_linear import NvFp4GroupedLinear
from nvfp4.backends import sm90
from nvfp4.backends.base import Backend
from conftest import requires_cuda
from gpu_data import random_rows

pytestmark = [requires_cuda, pytest.mark.gpu]

# Qwen3-30B-A3B-like expert projections (gate/up: 768 x 2048, down: 2048 x 768) and an odd one
SHAPES = [(768, 2048), (2048, 768), (352, 1008)]
ROWS = [1, 2, 7, 8, 9, 16, 17, 40, 64, 65, 128, 300, 1000, 2049]


@pytest.fixture(scope="module", autouse=True)
def _hopper():
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the sm_90a kernels need a compute capability 9.0 GPU")


def random_grouped(e: int, n: int, k: int, *, seed: int, activation: str = "per-token",
                   dtype: torch.dtype = torch.bfloat16, batch_invariant: bool = True) -> NvFp4GroupedLinear:
    """E experts with random codes, block scales spanning 2^-9..2^8 and global scales 2^-3..2^3, on cuda."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    layer = NvFp4GroupedLinear(e, k, n, activation=activation, dtype=dtype, batch_invariant=batch_invariant,
                               device="cuda")
    sd = {
        "weight": torch.randint(0, 256, (e, n, k // 2), generator=g, device="cuda", dtype=torch.uint8),
        "weight_scale": torch.exp2(torch.randint(-9, 9, (e, n, k // 16), generator=g, device="cuda").float())
        .to(torch.float8_e4m3fn),
        "weight_scale_2": torch.exp2(torch.randint(-3, 4, (e,), generator=g, device="cuda").float()) * 0.75,
    }
    if activation == "static":
        sd["input_scale"] = torch.exp2(torch.randint(-9, -4, (e,), generator=g, device="cuda").float())
    layer.load_state_dict(sd, strict=False)
    return layer


def offsets_of(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0] + counts, dtype=torch.int64).cumsum(0).cuda()


def routing(kind: str, s: int, e: int, seed: int) -> list[int]:
    """Rows per expert: 'random' (multinomial, some experts empty), 'one' (every row on one expert), 'spread'
    (round robin), 'skewed' (half the rows on expert 0, the rest random)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "one":
        counts = [0] * e
        counts[int(torch.randint(0, e, (1,), generator=g))] = s
        return counts
    if kind == "spread":
        return [s // e + (1 if i < s % e else 0) for i in range(e)]
    if kind == "skewed":
        rest = torch.bincount(torch.randint(0, e, (s - s // 2,), generator=g), minlength=e)
        rest[0] += s // 2
        return rest.tolist()
    probs = torch.rand(e, generator=g) ** 3
    return torch.bincount(torch.multinomial(probs, s, replacement=True, generator=g), minlength=e).tolist()


def per_expert(layer: NvFp4GroupedLinear, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """One invariant NvFp4Linear-equivalent call per expert (Backend.grouped_forward's default)."""
    return Backend.grouped_forward(sm90.BACKEND, layer, x, offsets)


def assert_rows_equal(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    bad = (got.view(torch.int16) != want.view(torch.int16)).any(dim=1).nonzero().flatten().tolist()
    assert not bad, f"{what}: rows {bad[:10]} (of {len(bad)}) differ from the per-expert calls"


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("activation,dtype", [("per-token", torch.bfloat16), ("per-token", torch.float16),
                                              ("static", torch.bfloat16), ("static", torch.float16),
                                              ("none", torch.bfloat16)])
def test_grouped_equals_per_expert_calls(n, k, activation, dtype):
    e = 16
    layer = random_grouped(e, n, k, seed=n + k, activation=activation, dtype=dtype)
    for i, s in enumerate(ROWS):
        for kind in ("random", "one", "spread", "skewed"):
            x = random_rows(s, k, seed=100 * s + i, dtype=dtype)
            offsets = offsets_of(routing(kind, s, e, seed=s + 7 * i))
            assert_rows_equal(layer(x, offsets), per_expert(layer, x, offsets), f"S={s} {kind}")


@pytest.mark.parametrize("fused,pdl", [("always", False), ("never", False), ("never", True)])
def test_both_quantizer_paths_give_the_same_bits(fused, pdl):
    e, n, k = 8, 768, 2048
    for activation in ("per-token", "static"):
        layer = random_grouped(e, n, k, seed=3, activation=activation)
        for s in (1, 5, 16, 33, 64, 100):
            x = random_rows(s, k, seed=s)
            offsets = offsets_of(routing("random", s, e, seed=s))
            want = per_expert(layer, x, offsets)
            with sm90.planning(fused=fused, pdl=pdl):
                plan = sm90.grouped_plan(s, e, n, k, activation)
                got = layer(x, offsets)
            assert_rows_equal(got, want, f"{activation} S={s} plan {plan}")


def test_plan_follows_rows_per_expert():
    # the token tile follows the mean rows per active expert; slots bound the groups' tiles
    assert sm90.grouped_plan(8, 128, 768, 2048).token_tile == 8
    assert sm90.grouped_plan(64 * 128, 128, 768, 2048).token_tile == 64
    assert sm90.grouped_plan(4096 * 8, 128, 768, 2048).token_tile == 128
    p = sm90.grouped_plan(100, 16, 768, 2048)
    assert p.slots == (100 + 16 * (p.token_tile - 1)) // p.token_tile
    assert p.chunk_k == sm90.plan(1, 768, 2048).chunk_k


def test_a_rows_bits_do_not_depend_on_the_other_rows():
    e, n, k = 32, 768, 2048
    layer = random_grouped(e, n, k, seed=11)
    needle = random_rows(1, k, seed=5)
    alone = layer(needle, offsets_of([0] * 3 + [1] + [0] * (e - 4)))
    for s in (2, 9, 31, 64, 257, 1500):
        counts = routing("random", s - 1, e, seed=s)
        pos = sum(counts[:3]) + (counts[3] // 2)  # inside expert 3's rows, among other tokens of the same expert
        x = random_rows(s - 1, k, seed=s)
        x = torch.cat([x[:pos], needle, x[pos:]])
        counts[3] += 1
        out = layer(x, offsets_of(counts))
        assert torch.equal(out[pos: pos + 1], alone), f"S={s}: the needle row changed with the other rows"


def test_fast_mode_gives_the_invariant_bits():
    e, n, k = 8, 768, 2048
    invariant = random_grouped(e, n, k, seed=2)
    fast = random_grouped(e, n, k, seed=2, batch_invariant=False)
    x = random_rows(700, k, seed=1)
    offsets = offsets_of(routing("random", 700, e, seed=1))
    assert torch.equal(fast(x, offsets), invariant(x, offsets))


def test_cuda_graph_replays_new_routings():
    e, n, k, s = 16, 768, 2048, 96
    layer = random_grouped(e, n, k, seed=4)
    x = random_rows(s, k, seed=0)
    offsets = offsets_of(routing("random", s, e, seed=0))
    layer(x, offsets)  # warm up (workspace sizes, tensor map encoder)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = layer(x, offsets)
    for seed in range(1, 6):
        x.copy_(random_rows(s, k, seed=seed))
        offsets.copy_(offsets_of(routing(("random", "one", "skewed")[seed % 3], s, e, seed=seed)))
        graph.replay()
        torch.cuda.synchronize()
        assert_rows_equal(out, per_expert(layer, x, offsets), f"replay {seed}")


def test_torch_compile():
    e, n, k, s = 8, 768, 2048, 40
    layer = random_grouped(e, n, k, seed=6)
    x = random_rows(s, k, seed=6)
    offsets = offsets_of(routing("random", s, e, seed=6))
    compiled = torch.compile(lambda a, b: layer(a, b), fullgraph=True)
    assert_rows_equal(compiled(x, offsets), per_expert(layer, x, offsets), "torch.compile")


def test_offsets_out_of_range_stay_in_bounds():
    e, n, k, s = 4, 256, 256, 20
    layer = random_grouped(e, n, k, seed=8)
    x = random_rows(s, k, seed=8)
    for bad in ([0, 5, 3, 10, 20], [-7, 5, 10, 15, 1 << 40], [0, 0, 0, 0, 0], [20, 20, 20, 20, 20]):
        layer(x, torch.tensor(bad, dtype=torch.int64, device="cuda"))
        torch.cuda.synchronize()  # no fault; the values of such rows are unspecified
    # clamped ends: rows of expert 3 are [15, 20) whatever offsets[4] holds past S
    good = offsets_of([5, 5, 5, 5])
    want = layer(x, good)
    got = layer(x, torch.tensor([0, 5, 10, 15, 1 << 40], dtype=torch.int64, device="cuda"))
    assert torch.equal(got, want)


def test_bad_input_names_the_argument():
    layer = random_grouped(4, 256, 256, seed=9)
    x = random_rows(8, 256, seed=9)
    with pytest.raises(ValueError, match="offsets"):
        layer(x, torch.zeros(4, dtype=torch.int64, device="cuda"))
    with pytest.raises(ValueError, match="offsets"):
        layer(x, torch.zeros(5, dtype=torch.int32, device="cuda"))
    with pytest.raises(ValueError, match="w_prepacked"):
        sm90.grouped_linear_sm90_impl(x, layer.weight[0], layer.weight_scale_2, None, offsets_of([2, 2, 2, 2]),
                                      sm90.ACT_QUANT_PER_TOKEN, 256)
    w4a16 = random_grouped(4, 256, 256, seed=9, activation="none")
    with pytest.raises(TypeError, match="bfloat16"):
        w4a16(x.half(), offsets_of([2, 2, 2, 2]))


def _random_experts(e: int, hidden: int, inter: int, seed: int):
    from nvfp4.moe import NvFp4Experts

    experts = NvFp4Experts(e, hidden, inter, act_fn=torch.nn.functional.silu, batch_invariant=True, device="cuda")
    for i, name in enumerate(("gate_proj", "up_proj", "down_proj")):
        proj = getattr(experts, name)
        src = random_grouped(e, proj.out_features, proj.in_features, seed=seed + i)
        proj.load_state_dict(src.state_dict())
    return experts


def _route(tokens: int, e: int, top_k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.rand(tokens, e, generator=g, device="cuda")
    weights, index = logits.topk(top_k, dim=1)
    index[0, -1] = e  # one slot with no expert
    return index, (weights / weights.sum(1, keepdim=True)).to(torch.bfloat16)


def test_a_whole_moe_layer_runs_in_a_cuda_graph_and_under_compile():
    e, hidden, inter, top_k, tokens = 32, 1024, 512, 4, 48
    experts = _random_experts(e, hidden, inter, seed=20)
    x = random_rows(tokens, hidden, seed=20)
    index, weights = _route(tokens, e, top_k, seed=20)
    eager = experts(x, index, weights)
    assert torch.isfinite(eager).all()
    experts(x, index, weights)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = experts(x, index, weights)
    for seed in (21, 22, 23):
        x.copy_(random_rows(tokens, hidden, seed=seed))
        new_index, new_weights = _route(tokens, e, top_k, seed=seed)
        index.copy_(new_index)
        weights.copy_(new_weights)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, experts(x, index, weights)), f"replay {seed}"
    compiled = torch.compile(experts, fullgraph=True)
    assert torch.equal(compiled(x, index, weights), experts(x, index, weights))
    # a token's output does not depend on the other tokens
    alone = experts(x[5:6], index[5:6], weights[5:6])
    assert torch.equal(experts(x, index, weights)[5:6], alone)


TOKENS = list(range(1, 301)) + [512, 1024, 2048, 4096, 8192]


def test_every_token_count_gives_the_per_expert_bits():
    """Decode to prefill token counts of a top-8-of-128 layer (rows = 8 x tokens, drawn without repeats per token):
    the grouped GEMM equals the per-expert calls row for row at every count."""
    e, top_k, n, k = 128, 8, 768, 2048
    layer = random_grouped(e, n, k, seed=31)
    pool = random_rows(TOKENS[-1] * top_k, k, seed=31)
    for t in TOKENS:
        g = torch.Generator().manual_seed(t)
        experts = torch.rand(t, e, generator=g).topk(top_k, dim=1).indices.flatten()
        offsets = offsets_of(torch.bincount(experts, minlength=e).tolist())
        x = pool[: t * top_k]
        assert_rows_equal(layer(x, offsets), per_expert(layer, x, offsets), f"tokens={t}")
