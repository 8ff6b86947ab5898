"""Reference NVFP4 GEMM: the definition of the math, batch invariant by construction.

    out[m, n] = cast(alpha[m] * acc[m, n] + bias[n]),  acc[m, n] = sum_k a[m, k] * w[n, k]

where a = e2m1 * block scale of the activations (or raw bf16 for W4A16) and w = e2m1 * block scale of the weights.
Each product is exact in fp32 (at most 6 x 8 significant bits). The fp32 accumulation order follows the library's
K-chunk rule (chunking.py): K is cut into chunks [c*kc, (c+1)*kc) with kc = chunk_k(N, K) unless the caller gives the
chunk length, and
  1. inside each 16-element block, a pairwise tree: (p0+p1), (p2+p3), ... then pairs of those, 4 levels;
  2. inside each chunk, a pairwise tree over its kc/16 block sums, padded with zeros to a power of two (the blocks a
     short last chunk lacks count as zeros too; adding +0.0 is exact), so a chunk's tree shape depends on kc alone;
  3. the chunk sums added in chunk order to a zero total: ((0 + s0) + s1) + ...
A chunk sum depends only on that chunk's K range, so a rank that holds whole chunks of K (a row-parallel shard,
nvfp4.parallel) computes its chunk sums alone (chunk_sums with the global kc), and adding every rank's chunk sums
in global chunk order (add_chunks_in_order) gives the bits of the whole GEMM.
Every step is an elementwise torch op, which rounds each element on its own, so the result of a row does not depend
on M, on the row's position or on the other rows, on CPU and on CUDA alike. Rows are processed in groups only to
bound memory; grouping cannot change a row's arithmetic.
"""

from __future__ import annotations

import torch

from .chunking import chunk_k
from .format import BLOCK_SIZE, e2m1_values, unpack_e2m1

_GROUP_ELEMENTS = 1 << 25  # products held at once (128 MiB of fp32)


def dequantize_weight_blocks(w_packed: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """Weights as exact fp32 values e2m1 * block scale, [N, K] (no global scale)."""
    n, half_k = w_packed.shape
    values = e2m1_values(unpack_e2m1(w_packed)).reshape(n, half_k * 2 // BLOCK_SIZE, BLOCK_SIZE)
    return (values * w_scale.view(torch.float8_e4m3fn).float().unsqueeze(-1)).reshape(n, half_k * 2)


def _pairwise_sum_last(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim (a power of two) with a fixed pairwise tree."""
    while x.shape[-1] > 1:
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def _check_chunk(fn: str, chunk: int) -> None:
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < BLOCK_SIZE or chunk % BLOCK_SIZE:
        raise ValueError(f"{fn}: chunk must be a positive multiple of {BLOCK_SIZE} (the block), got {chunk!r}")


def chunk_sums(a: torch.Tensor, w: torch.Tensor, chunk: int) -> torch.Tensor:
    """Per-chunk sums [ceil(K/chunk), M, N] fp32 of exact fp32 operands a [M, K], w [N, K], each chunk summed from
    zero in the documented order (steps 1 and 2). K need not be a multiple of chunk: the last chunk is short."""
    _check_chunk("nvfp4.reference.chunk_sums", chunk)
    m, k = a.shape
    n = w.shape[0]
    if k % BLOCK_SIZE or w.shape[1] != k:
        raise ValueError(f"nvfp4.reference.chunk_sums: a [M, K] and w [N, K] need one K, a multiple of {BLOCK_SIZE} "
                         f"(got a {tuple(a.shape)}, w {tuple(w.shape)})")
    chunks = (k + chunk - 1) // chunk
    leaves = 1 << (chunk // BLOCK_SIZE - 1).bit_length()  # the tree of every chunk has the shape of a full one
    out = torch.empty((chunks, m, n), dtype=torch.float32, device=a.device)
    rows_per_group = max(1, _GROUP_ELEMENTS // max(1, n * min(k, chunk)))
    for c in range(chunks):
        k0, k1 = c * chunk, min(k, (c + 1) * chunk)
        blocks = (k1 - k0) // BLOCK_SIZE
        wb = w[:, k0:k1].reshape(n, blocks, BLOCK_SIZE)
        for start in range(0, m, rows_per_group):
            ab = a[start : start + rows_per_group, k0:k1].reshape(-1, 1, blocks, BLOCK_SIZE)
            block_sums = _pairwise_sum_last(ab * wb)  # [rows, N, blocks]
            if leaves != blocks:
                block_sums = torch.nn.functional.pad(block_sums, (0, leaves - blocks))
            out[c, start : start + rows_per_group] = _pairwise_sum_last(block_sums)
    return out


def add_chunks_in_order(partials: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """Step 3: total + p[0] + p[1] + ... in order, from a zero total unless the running total of the chunks before
    these is given (the previous rank's, in a row-parallel layer). partials [C, M, N] fp32."""
    out = torch.zeros(partials.shape[1:], dtype=torch.float32, device=partials.device) if total is None else total
    for p in partials:
        out = out + p
    return out


def accumulate(a: torch.Tensor, w: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """acc [M, N] fp32 from exact fp32 operands a [M, K], w [N, K] in the documented order; chunk defaults to the
    library's chunk_k(N, K) (a column-parallel shard passes its whole layer's)."""
    if chunk is None:
        chunk = chunk_k(w.shape[0], a.shape[1])
    return add_chunks_in_order(chunk_sums(a, w, chunk))


def epilogue(acc: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:
    """alpha (one value or one per row) times acc, plus bias, rounded once to out_dtype."""
    scaled = acc * alpha.float().reshape(-1, 1)
    if bias is not None:
        scaled = scaled + bias.float()
    return scaled.to(out_dtype)


def gemm_reference(
    act: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    alpha: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    chunk: int | None = None,
) -> torch.Tensor:
    """act [M, K] (exact dequantized activations or raw bf16/fp16), w_packed uint8 [N, K/2], w_scale e4m3/uint8
    [N, K/16] linear, alpha float32 (1 or M values) -> [M, N] out_dtype. chunk: the K-chunk length (default
    chunk_k(N, K))."""
    acc = accumulate(act.float(), dequantize_weight_blocks(w_packed, w_scale), chunk)
    return epilogue(acc, alpha, bias, out_dtype)
