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
        amax_t = torch.as_tensor(amax, dtype=torch.float32, device=x.device).reshape(())
    if not bool(torch.isfinite(amax_t)) or float(amax_t) <= 0:
        raise ValueError(f"{fn}: amax must be finite and > 0, got {float(amax_t)} (x all zero or non-finite?)")
    # The recipes run on CPU whatever x's device: torch's CUDA division by a scalar multiplies by its reciprocal,
    # which would make the bytes depend on where the weights happen to live.
    q = fmt.quantize_weight(x.cpu(), amax_t.cpu())
    if x.device.type == "cpu":
        return q
    move = lambda t: None if t is None else t.to(x.device)  # noqa: E731
    return NvFp4Tensor(move(q.data), move(q.scale), move(q.global_scale), move(q.encode_scale))
