"""Reference activation quantizer: the recipe the CUDA quantizer reproduces bit for bit.

Rows are quantized independently with the ModelOpt block step (formats.modelopt.block_quantize). The per-row decode
global scale is either a static calibrated value (ModelOpt's `input_scale`) or per-token: amax(|row|) / 2688, and
1.0 for an all-zero row. A batch-wide dynamic scale would make every row depend on the others, so none is offered.

Every divisor here is a tensor on the data's device: torch's CUDA division by a CPU scalar multiplies by a
reciprocal, which would not round like the IEEE division the kernel performs.
"""

from __future__ import annotations

import torch

from .format import GLOBAL_SCALE_RANGE, BLOCK_SIZE, canonical_nan, e2m1_values, pack_e2m1, swizzle_scales
from .formats.modelopt import block_quantize


def canonical_nan_bf16(x: torch.Tensor) -> torch.Tensor:
    """NaN -> 0x7FC0: torch's vectorised float->bf16 conversion writes 0xFFFF for NaN, its scalar one 0x7FC0."""
    bits = x.view(torch.int16)
    return torch.where(torch.isnan(x), torch.full_like(bits, 0x7FC0), bits).view(torch.bfloat16)


def per_token_global_scale(x: torch.Tensor) -> torch.Tensor:
    """Decode global scale per row of x [rows, K] (float32 [rows]); NaN rows give the canonical NaN."""
    amax = x.float().abs().amax(dim=-1)
    scale = amax / torch.full_like(amax, GLOBAL_SCALE_RANGE)
    return canonical_nan(torch.where(scale == 0, torch.ones_like(scale), scale))


def row_global_scales(x: torch.Tensor, static_scale: torch.Tensor | None) -> torch.Tensor:
    if static_scale is None:
        return per_token_global_scale(x)
    return static_scale.float().reshape(1).to(x.device).expand(x.shape[0]).contiguous()


def quantize_activations_reference(
    x: torch.Tensor, static_scale: torch.Tensor | None, scale_multiplier: torch.Tensor | None = None,
    *, row_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [rows, K] bf16/fp16 -> (packed uint8 [rows, K/2], swizzled scale bytes, dequantized bf16 [rows, K],
    row decode scales float32 [rows], times scale_multiplier when given: the GEMM's alpha). The dequantized values are e2m1 * block scale, without the global scale; a
    NaN among them is the canonical bf16 NaN 0x7FC0 (what torch's CPU conversion writes).

    row_scale: the rows' decode global scales float32 [rows], given instead of computed (a tensor-parallel rank
    holds part of each row, so the per-token scale comes from the whole row's amax: nvfp4.parallel)."""
    if row_scale is not None:
        if static_scale is not None:
            raise ValueError("quantize_activations_reference: pass static_scale or row_scale, not both")
        if row_scale.numel() != x.shape[0]:
            raise ValueError(f"quantize_activations_reference: row_scale must hold one value per row of x "
                             f"({x.shape[0]}), got shape {tuple(row_scale.shape)}")
    s2 = row_global_scales(x, static_scale) if row_scale is None else row_scale.float().reshape(-1).to(x.device)
    codes, block_scale = block_quantize(x, s2)
    rows, cols = x.shape
    values = e2m1_values(codes).reshape(rows, cols // BLOCK_SIZE, BLOCK_SIZE)
    dequant = canonical_nan_bf16((values * block_scale.float().unsqueeze(-1)).reshape(rows, cols).to(torch.bfloat16))
    row_scale = s2 if scale_multiplier is None else canonical_nan(s2 * scale_multiplier.float().reshape(1).to(s2.device))
    return pack_e2m1(codes), swizzle_scales(block_scale), dequant, row_scale
