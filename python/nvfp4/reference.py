"""Reference NVFP4 GEMM: the definition of the math, batch invariant by construction.

    out[m, n] = cast(alpha[m] * acc[m, n] + bias[n]),  acc[m, n] = sum_k a[m, k] * w[n, k]

where a = e2m1 * block scale of the activations (or raw bf16 for W4A16) and w = e2m1 * block scale of the weights.
Each product is exact in fp32 (at most 6 x 8 significant bits). The fp32 accumulation order is fixed by K alone:
  1. inside each 16-element block, a pairwise tree: (p0+p1), (p2+p3), ... then pairs of those, 4 levels;
  2. over the K/16 block sums, a pairwise tree of the same shape over the blocks padded with zeros to a power of
     two (adding +0.0 is exact).
Every step is an elementwise torch op, which rounds each element on its own, so the result of a row does not depend
on M, on the row's position or on the other rows, on CPU and on CUDA alike. Rows are processed in chunks only to
bound memory; chunking cannot change a row's arithmetic.
"""

from __future__ import annotations

import torch

from .format import BLOCK_SIZE, e2m1_values, unpack_e2m1

_CHUNK_ELEMENTS = 1 << 25  # products held at once (128 MiB of fp32)


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


def accumulate(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """acc [M, N] fp32 from exact fp32 operands a [M, K], w [N, K] in the documented order."""
    m, k = a.shape
    n = w.shape[0]
    blocks = k // BLOCK_SIZE
    padded_blocks = 1 << max(blocks - 1, 0).bit_length()
    out = torch.empty((m, n), dtype=torch.float32, device=a.device)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, n * k))
    wb = w.reshape(n, blocks, BLOCK_SIZE)
    for start in range(0, m, rows_per_chunk):
        ab = a[start : start + rows_per_chunk].reshape(-1, 1, blocks, BLOCK_SIZE)
        block_sums = _pairwise_sum_last(ab * wb)  # [rows, N, blocks]
        if padded_blocks != blocks:
            block_sums = torch.nn.functional.pad(block_sums, (0, padded_blocks - blocks))
        out[start : start + rows_per_chunk] = _pairwise_sum_last(block_sums)
    return out


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
) -> torch.Tensor:
    """act [M, K] (exact dequantized activations or raw bf16/fp16), w_packed uint8 [N, K/2], w_scale e4m3/uint8
    [N, K/16] linear, alpha float32 (1 or M values) -> [M, N] out_dtype."""
    acc = accumulate(act.float(), dequantize_weight_blocks(w_packed, w_scale))
    return epilogue(acc, alpha, bias, out_dtype)
