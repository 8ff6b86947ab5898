"""Tensor-parallel placement rules: which part of a layer a rank holds, and how a row-parallel layer reduces.

Pure functions of shapes and degrees (no process group), so docs/parallel.md's tables and the tests compute from the
same rules the layers follow.

Row-parallel layers (input split along K) reduce one of two ways, chosen from (N, K, degree) alone:
- "chunks": every rank's K shard holds whole chunks of the layer's chunk length kc = chunking.chunk_k(N, K); each
  rank computes its per-chunk fp32 sums, and the running total passes from rank to rank in chunk order
  (0 + s0 + s1 + ...), so every output is summed exactly as on one GPU. The last rank applies the epilogue and
  broadcasts the result.
- "gather": the shards would cut chunks (K / degree is not a multiple of kc), so the rank holds N / degree output
  features over all of K instead, gathers the input's K shards (each row whole, in rank order), computes its output
  features with the layer's kc, and the outputs are gathered in rank order. Same bits again, by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .chunking import chunk_k
from .format import BLOCK_SIZE

RowMode = Literal["chunks", "gather"]
ROW_MODES: tuple[str, ...] = ("auto", "chunks", "gather")
# "gather" receives (d-1) M (K + N) 2-byte values, a ring all-reduce of fp32 outputs 2 (d-1) M N 4 bytes: the gather
# stays within twice that while K <= 7 N.
GATHER_MAX_K_OVER_N = 7


def check_degree(fn: str, degree: int, rank: int) -> None:
    if not isinstance(degree, int) or degree < 1:
        raise ValueError(f"{fn}: the tensor-parallel degree must be an integer >= 1, got {degree!r}")
    if not isinstance(rank, int) or not 0 <= rank < degree:
        raise ValueError(f"{fn}: rank must be in [0, {degree}), got {rank!r}")


def even_range(fn: str, what: str, total: int, degree: int, rank: int, multiple: int = 1) -> tuple[int, int]:
    """[start, stop) of rank's equal part of `total`; the parts must be whole multiples of `multiple`."""
    check_degree(fn, degree, rank)
    if total % degree or (total // degree) % multiple:
        raise ValueError(f"{fn}: {what} = {total} must split into {degree} equal parts that are multiples of "
                         f"{multiple} (tensor-parallel degree {degree})")
    part = total // degree
    return rank * part, (rank + 1) * part


def chunks_hold(n: int, k: int, degree: int) -> bool:
    """Whether K split into `degree` equal shards gives every shard whole chunks of chunk_k(N, K)."""
    return k % degree == 0 and (k // degree) % chunk_k(n, k) == 0


def row_mode(n: int, k: int, degree: int, requested: str = "auto") -> RowMode:
    """The reduction of a row-parallel N x K layer at this degree ("chunks" where the shards hold whole chunks)."""
    fn = "nvfp4.parallel.row_mode"
    if requested not in ROW_MODES:
        raise ValueError(f"{fn}: mode must be one of {ROW_MODES}, got {requested!r}")
    if k % degree or (k // degree) % BLOCK_SIZE:
        raise ValueError(f"{fn}: in_features K = {k} must split into {degree} equal shards that are multiples of "
                         f"{BLOCK_SIZE} (the NVFP4 block)")
    fits = chunks_hold(n, k, degree)
    if requested == "chunks" and not fits:
        raise ValueError(f"{fn}: mode='chunks' needs K / degree = {k // degree} to be a multiple of the chunk "
                         f"length chunk_k({n}, {k}) = {chunk_k(n, k)}; use mode='gather' or 'auto'")
    mode: RowMode = "chunks" if requested == "chunks" or (requested == "auto" and fits) else "gather"
    if mode == "gather" and n % degree:
        raise ValueError(f"{fn}: mode 'gather' splits out_features N = {n} into {degree} equal parts; N is not a "
                         f"multiple of the degree (and K / degree = {k // degree} cuts the chunks of "
                         f"{chunk_k(n, k)}, so mode 'chunks' cannot serve either)")
    if mode == "gather" and k > GATHER_MAX_K_OVER_N * n:
        raise ValueError(f"{fn}: K / degree = {k // degree} cuts the chunks of chunk_k({n}, {k}) = {chunk_k(n, k)}, "
                         f"and gathering the input moves more than twice a ring all-reduce of the outputs where "
                         f"K > {GATHER_MAX_K_OVER_N} N (K = {k}, N = {n}); no bitwise tensor-parallel split of this "
                         f"layer at degree {degree}")
    return mode


@dataclass(frozen=True)
class HeadSplit:
    """One rank's attention heads: query heads [q0, q1), key/value heads [kv0, kv1) (replicated across ranks when
    the degree exceeds the KV head count: each KV head then serves degree / num_kv_heads ranks)."""

    q0: int
    q1: int
    kv0: int
    kv1: int

    @property
    def groups(self) -> int:
        """Query heads per local KV head."""
        return (self.q1 - self.q0) // (self.kv1 - self.kv0)


def head_split(num_heads: int, num_kv_heads: int, degree: int, rank: int) -> HeadSplit:
    fn = "nvfp4.parallel.head_split"
    check_degree(fn, degree, rank)
    if num_heads % degree:
        raise ValueError(f"{fn}: num_attention_heads = {num_heads} must be a multiple of the tensor-parallel degree "
                         f"{degree}")
    if num_heads % num_kv_heads:
        raise ValueError(f"{fn}: num_attention_heads = {num_heads} must be a multiple of num_key_value_heads = "
                         f"{num_kv_heads}")
    q0, q1 = even_range(fn, "num_attention_heads", num_heads, degree, rank)
    if num_kv_heads >= degree:
        kv0, kv1 = even_range(fn, "num_key_value_heads", num_kv_heads, degree, rank)
    else:
        if degree % num_kv_heads:
            raise ValueError(f"{fn}: num_key_value_heads = {num_kv_heads} below the degree {degree} must divide it "
                             f"(each KV head is then replicated on degree / num_key_value_heads ranks)")
        kv0 = rank // (degree // num_kv_heads)
        kv1 = kv0 + 1
    return HeadSplit(q0, q1, kv0, kv1)


# --- communication volume ---------------------------------------------------------------------------------------
# Bytes every rank together must receive for one call with M rows (the lower bound of any algorithm for the
# collective, which ring and tree implementations meet): what docs/parallel.md states and the tests count.

def ring_allreduce_bytes(m: int, n: int, degree: int) -> int:
    """An all-reduce of the fp32 [M, N] outputs, as a ring: reduce-scatter + all-gather, 2 (d-1)/d of the data per
    rank."""
    return 2 * (degree - 1) * m * n * 4


def row_parallel_bytes(m: int, n: int, k: int, degree: int, mode: RowMode, *, out_bytes: int = 2,
                       per_token: bool = False) -> int:
    """Bytes received by all ranks for one row-parallel call (out_bytes: 2 for bf16/fp16 outputs and inputs)."""
    if degree == 1:
        return 0
    if mode == "chunks":
        chain = (degree - 1) * m * n * 4  # the fp32 running total, rank to rank
        broadcast = (degree - 1) * m * n * out_bytes  # the finished output, from the last rank
        amax = 2 * (degree - 1) * m * 4 * 2 if per_token else 0  # all-reduce MAX of [2, M] fp32 (amax, NaN flag)
        return chain + broadcast + amax
    return (degree - 1) * m * k * out_bytes + (degree - 1) * m * n * out_bytes  # input and output all-gathers


def column_parallel_bytes(m: int, n: int, degree: int, *, gather_output: bool, out_bytes: int = 2) -> int:
    return (degree - 1) * m * n * out_bytes if gather_output and degree > 1 else 0
