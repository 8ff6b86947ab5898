"""The quantized tensor container returned by nvfp4.quantize, and dequantization."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import require_dim, require_dtype, require_multiple, require_shape, require_tensor
from .format import BLOCK_SIZE, e2m1_values, unpack_e2m1


@dataclass(frozen=True)
class NvFp4Tensor:
    """An NVFP4 matrix in the on-disk form shared by ModelOpt and compressed-tensors.

    data:         uint8 [rows, K/2], two e2m1 codes per byte, element 2j in the low nibble.
    scale:        float8_e4m3fn [rows, K/16], linear (row-major) layout.
    global_scale: float32 0-d, decode convention (ModelOpt's `weight_scale_2` = amax / 2688); compressed-tensors
                  stores its reciprocal (`encode_global_scale`).
    encode_scale: the producer's exact encode value when it has one (compressed-tensors computes 2688/amax in
                  bf16; for ~1 in 5 such values no fp32 reciprocal round-trips, see docs/recipes.md).
    """

    data: torch.Tensor
    scale: torch.Tensor
    global_scale: torch.Tensor
    encode_scale: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.data.shape[0], self.data.shape[1] * 2)

    @property
    def encode_global_scale(self) -> torch.Tensor:
        """compressed-tensors' `weight_global_scale` (2688 / amax)."""
        if self.encode_scale is not None:
            return self.encode_scale.float().reshape(1)
        return (1.0 / self.global_scale.float()).reshape(1)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self, dtype)


def dequantize(t: NvFp4Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """e2m1 * block scale * global scale, computed in float32 and then cast to `dtype`."""
    fn = "nvfp4.dequantize"
    if not isinstance(t, NvFp4Tensor):
        raise TypeError(f"{fn}: t must be an NvFp4Tensor, got {type(t).__name__}")
    require_tensor(fn, "t.data", t.data)
    require_dtype(fn, "t.data", t.data, (torch.uint8,))
    require_dim(fn, "t.data", t.data, 2)
    rows, cols = t.shape
    require_tensor(fn, "t.scale", t.scale)
    require_dtype(fn, "t.scale", t.scale, (torch.float8_e4m3fn, torch.uint8))
    require_multiple(fn, "K (2 * t.data.shape[1])", cols, BLOCK_SIZE)
    require_shape(fn, "t.scale", t.scale, (rows, cols // BLOCK_SIZE))
    require_tensor(fn, "t.global_scale", t.global_scale)
    if t.global_scale.numel() != 1:
        raise ValueError(f"{fn}: t.global_scale must hold one value, got shape {tuple(t.global_scale.shape)}")
    if t.scale.dtype == torch.uint8:
        t = NvFp4Tensor(t.data, t.scale.view(torch.float8_e4m3fn), t.global_scale, t.encode_scale)
    values = e2m1_values(unpack_e2m1(t.data)).reshape(rows, cols // BLOCK_SIZE, BLOCK_SIZE)
    block = t.scale.to(torch.float32).reshape(rows, cols // BLOCK_SIZE, 1)
    return (values * block * t.global_scale.float()).reshape(rows, cols).to(dtype)
