"""nvfp4.quantize: the public entry point for quantizing a weight-like matrix with a producer's recipe."""

from __future__ import annotations

import torch

from .checks import require_dim, require_dtype, require_multiple, require_tensor
from .format import BLOCK_SIZE
from . import formats
from .tensor import NvFp4Tensor


def quantize(x: torch.Tensor, *, amax: torch.Tensor | float | None = None, recipe: str = "modelopt") -> NvFp4Tensor:
    """Quantize x [rows, K] (bf16, fp16 or fp32; K % 16 == 0) to NVFP4.

    amax is the per-tensor absolute maximum that sets the global scale; by default max|x|. Fused shards (q/k/v,
    gate/up) must pass the amax shared by the whole fused group, as ModelOpt and llm-compressor do. recipe selects
    whose bytes to reproduce: "modelopt" or "compressed-tensors".
    """
    fn = "nvfp4.quantize"
    require_tensor(fn, "x", x)
    x = x.detach()  # a Parameter quantizes to plain tensors, with no graph behind them
    require_dtype(fn, "x", x, (torch.bfloat16, torch.float16, torch.float32))
    require_dim(fn, "x", x, 2)
    require_multiple(fn, "x.shape[1] (K)", x.shape[1], BLOCK_SIZE)
    if x.shape[0] < 1:
        raise ValueError(f"{fn}: x must have at least one row, got shape {tuple(x.shape)}")
    fmt = formats.get(recipe, f"{fn}: recipe")
    if amax is None:
        amax_t = x.abs().amax().float()
    else:
        if isinstance(amax, torch.Tensor) and amax.numel() != 1:
            raise ValueError(f"{fn}: amax must be a single value, got shape {tuple(amax.shape)}")
        if isinstance(amax, bool) or not isinstance(amax, (int, float, torch.Tensor)):
            raise TypeError(f"{fn}: amax must be a number or a one-element tensor, got {type(amax).__name__}")
        amax_t = torch.as_tensor(amax, dtype=torch.float32).detach().to(x.device).reshape(())
    if not bool(torch.isfinite(amax_t)) or float(amax_t) <= 0:
        raise ValueError(f"{fn}: amax must be finite and > 0, got {float(amax_t)} (x all zero or non-finite?)")
    # The recipe runs where x lives. Its divisors are tensors on x's device (formats/base.divide_by): torch's CUDA
    # division by a CPU scalar multiplies by the reciprocal instead, which would make the bytes depend on the device.
    return fmt.quantize_weight(x, amax_t)
