"""Column- and row-parallel NvFp4Linear over gloo (processes spawned here): random Llama-shaped layers give the
unsplit layer's bits at tensor-parallel degrees 1, 2 and 4, for every batch and row position, and a row-parallel
call moves what docs/parallel.md states."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import nvfp4
from nvfp4 import parallel_comm
from nvfp4.chunking import chunk_k
from nvfp4.parallel_linear import ColumnParallelNvFp4Linear, RowParallelNvFp4Linear
from nvfp4.parallel_plan import column_parallel_bytes, ring_allreduce_bytes, row_mode, row_parallel_bytes
from conftest import wide_spread
from distributed import degree_groups, spawn

# (N, K) of layers shaped like Llama's, with N cut down where only the row count changes the cost: the K of
# Llama-3.1-8B's o_proj and down_proj (whole chunks at every degree), and a K whose shards cut chunks.
ROW_SHAPES = [(96, 4096), (64, 14336), (128, 512)]
COLUMN_SHAPES = [(256, 4096), (448, 512)]
ACTIVATIONS = ["per-token", "static", "none"]
BATCHES = [8, 3, 1]


def _mirror(t: torch.Tensor, sign: float) -> torch.Tensor:
    half = t[:, : t.shape[1] // 2]
    return torch.cat([half, sign * half], dim=1)


def _full_layer(n: int, k: int, activation: str, seed: int, cancelling: bool) -> nvfp4.NvFp4Linear:
    """A random layer; cancelling: the weight's second K half is the negated first half and there is no bias."""
    linear = torch.nn.Linear(k, n, bias=not cancelling, dtype=torch.bfloat16)
    with torch.no_grad():
        w = wide_spread(n, k, seed=seed)
        linear.weight.copy_(_mirror(w, -1.0) if cancelling else w)
        if not cancelling:
            linear.bias.copy_(torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(torch.bfloat16))
    amax = 40.0 if activation == "static" else None
    return nvfp4.NvFp4Linear.from_linear(linear, activation=activation, input_amax=amax, batch_invariant=True)


def _inputs(k: int, seed: int, cancelling: bool) -> torch.Tensor:
    """8 rows; cancelling: both K halves equal, so against a cancelling layer every output is the fp32 rounding
    residue of the sum, which depends on the summation order: bf16 outputs then show the order, as they otherwise
    rarely do."""
    x = wide_spread(8, k, seed=seed)
    if cancelling:
        return _mirror(x, 1.0)
    x[2] = 0  # an all-zero row: per-token scale 1
    x[5, k - 7] = float("nan")  # a NaN in the last rank's shard only: the whole row is NaN, as unsplit
    return x


CASES = [(a, False) for a in ACTIVATIONS] + [("per-token", True)]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16)


def _batches(seed: int) -> list[torch.Tensor]:
    """Row indices of the batches: 8, 3 and 1 rows, in moved positions."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(8, generator=g)[:m] for m in BATCHES]


def _layers_worker(rank: int, world: int) -> None:
    groups = degree_groups(rank, world)
    seed = 0
    changed_by_own_chunk = 0
    for kind, shapes in (("row", ROW_SHAPES), ("column", COLUMN_SHAPES)):
        for n, k in shapes:
            for activation, cancelling in CASES:
                seed += 1
                full = _full_layer(n, k, activation, seed, cancelling)
                x = _inputs(k, seed + 100, cancelling)
                alone = torch.cat([full(x[i:i + 1]) for i in range(8)])  # each row computed alone, unsplit
                if cancelling and k > chunk_k(n, k):  # (in one chunk the halves' subtrees cancel exactly)
                    assert (alone != 0).float().mean() > 0.2  # residues, not exact zeros
                for d, group in groups.items():
                    what = f"{kind} {n}x{k} {activation}{' cancelling' if cancelling else ''} degree {d}"
                    r = dist.get_rank(group)
                    if kind == "row":
                        layer = RowParallelNvFp4Linear.from_full(full, group=group)
                        shard = k // d
                        x_rank = x[:, r * shard:(r + 1) * shard]
                    else:
                        layer = ColumnParallelNvFp4Linear.from_full(full, group=group, gather_output=True)
                        x_rank = x
                    for rows in _batches(seed + d):
                        parallel_comm.traffic.reset()
                        y = layer(x_rank[rows])
                        assert torch.equal(_bits(y), _bits(alone[rows])), f"{what}, rows {rows.tolist()}"
                        if kind == "row" and d > 1:
                            moved = torch.tensor([parallel_comm.traffic.received_bytes])
                            dist.all_reduce(moved, group=group)
                            m = len(rows)
                            want = row_parallel_bytes(m, n, k, d, layer.mode, per_token=activation == "per-token")
                            assert moved.item() == want, f"{what}: {moved.item()} bytes received, stated {want}"
                            assert moved.item() <= 2 * ring_allreduce_bytes(m, n, d), what
                        if kind == "column":
                            assert parallel_comm.traffic.received_bytes * d == column_parallel_bytes(
                                len(rows), n, d, gather_output=True), what
                    if kind == "row" and d > 1 and layer.mode == "chunks" and cancelling:
                        # Negative control: the shard's own chunk length (what a shard-local kernel would pick)
                        # changes the bits, so the equalities above depend on the global one.
                        layer.chunk = chunk_k(n, k // d)
                        changed_by_own_chunk += not torch.equal(_bits(layer(x_rank)), _bits(alone))
    assert changed_by_own_chunk == sum(row_mode(n, k, d) == "chunks" for n, k in ROW_SHAPES for d in groups if d > 1)


def test_layers_bitwise_equal_at_degrees_1_2_4_with_rows_moved():
    spawn(_layers_worker, 4)


def test_the_shapes_cover_both_row_modes():
    assert {row_mode(n, k, 4) for n, k in ROW_SHAPES} == {"chunks", "gather"}
    assert {row_mode(n, k, 2) for n, k in ROW_SHAPES} == {"chunks", "gather"}
