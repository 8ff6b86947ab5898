"""The collectives of the tensor-parallel layers: torch.distributed only (NCCL on GPUs, gloo on CPU).

Every operation here either moves values unchanged (gathers, broadcasts, send/recv) or reduces with MAX, which is
exact in any order: no floating-point sum ever happens inside a collective, so no collective algorithm, channel
count or topology can change a bit. The sums happen in nvfp4.reference.add_chunks_in_order, in chunk order.

`traffic` tallies the bytes this process receives through these functions (the figure docs/parallel.md states;
the tests compare it with a ring all-reduce of the outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .reference import add_chunks_in_order

Group = dist.ProcessGroup | None


@dataclass
class Traffic:
    received_bytes: int = 0

    def reset(self) -> None:
        self.received_bytes = 0


traffic = Traffic()


def degree(group: Group) -> int:
    return dist.get_world_size(group)


def rank(group: Group) -> int:
    return dist.get_rank(group)


def _global(group: Group, group_rank: int) -> int:
    return group_rank if group is None else dist.get_global_rank(group, group_rank)


def all_gather_last(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Every rank's x (equal shapes) concatenated along the last dim in rank order."""
    d = degree(group)
    if d == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(d)]
    dist.all_gather(parts, x, group=group)
    traffic.received_bytes += (d - 1) * x.numel() * x.element_size()
    return torch.cat(parts, dim=-1)


def global_row_amax(x2: torch.Tensor, group: Group) -> torch.Tensor:
    """max |x| over each whole row [M] fp32, when every rank holds a part of each row of x2 [M, K_local].

    MAX is exact in any order, but NaN is not ordered, so NaN travels as a separate flag: a row with a NaN anywhere
    gets a NaN amax, as on one rank."""
    a = x2.float().abs().amax(dim=-1)
    nan = torch.isnan(a)
    both = torch.stack([torch.where(nan, torch.zeros_like(a), a), nan.float()])
    d = degree(group)
    if d > 1:
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
        traffic.received_bytes += 2 * (d - 1) * both.numel() * both.element_size() // d
    return torch.where(both[1] > 0, torch.full_like(both[0], float("nan")), both[0])


def chain_chunk_sums(partials: torch.Tensor, group: Group) -> torch.Tensor | None:
    """The in-order sum of every rank's chunk sums, ranks holding consecutive chunks in rank order.

    partials: this rank's [C, M, N] fp32 chunk sums. Rank r receives the running total of the chunks of ranks
    0..r-1, adds its own chunks to it in order and passes it on. Returns the full total on the last rank, None on
    the others."""
    d, r = degree(group), rank(group)
    total = None
    if r > 0:
        total = torch.empty(partials.shape[1:], dtype=torch.float32, device=partials.device)
        dist.recv(total, src=_global(group, r - 1), group=group)
        traffic.received_bytes += total.numel() * total.element_size()
    total = add_chunks_in_order(partials, total)
    if r < d - 1:
        dist.send(total, dst=_global(group, r + 1), group=group)
        return None
    return total


def broadcast_from_last(y: torch.Tensor, group: Group) -> torch.Tensor:
    """The last rank's y on every rank (y: the result there, a buffer of the same shape and dtype elsewhere)."""
    d = degree(group)
    if d > 1:
        dist.broadcast(y, src=_global(group, d - 1), group=group)
        if rank(group) != d - 1:
            traffic.received_bytes += y.numel() * y.element_size()
    return y
