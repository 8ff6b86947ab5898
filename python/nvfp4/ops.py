"""The activation quantizer's torch.library custom ops (shared by the kernel backends), and the helpers every
backend's ops use. Each backend module (backends/) defines its own GEMM ops next to its code.

e4m3 scales cross the op boundary as uint8 views (opcheck cannot handle float8 arguments on CPU). The CUDA stream is
read inside each op at call time, never passed as an argument: dynamo would bake it in, and graph capture runs on a
side stream. Outputs are torch allocations, so they come from the caching allocator and CUDA-graph pools.

Eager calls skip the custom-op dispatcher (~10 us) through `call`, which goes straight to the implementation
unless torch.compile is tracing.
"""

from __future__ import annotations

import ctypes
from typing import Callable

import torch

from . import _lib
from .activation import quantize_activations_reference
from .checks import (
    ACTIVATION_DTYPES, require_dim, require_dtype, require_multiple, require_same_device, require_scale_scalar,
    require_shape, require_tensor,
)
from .format import swizzled_scale_bytes

ABI_DTYPE_CODE = {torch.bfloat16: 0, torch.float16: 1}  # NVFP4_DTYPE_BF16 / NVFP4_DTYPE_FP16 of nvfp4.h


def call(op: Callable, impl: Callable, *args):
    if torch.compiler.is_compiling():
        return op(*args)
    return impl(*args)


def data_ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def current_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def aligned_rows(x: torch.Tensor) -> torch.Tensor:
    """The kernels read 16-byte aligned rows; a view at an odd offset is copied (here, outside any trace)."""
    if x.data_ptr() % 16 or x.stride(0) % 8:
        return x.contiguous() if not x.is_contiguous() else x.clone()
    return x


def _launch_quantizer(x, static_scale, multiplier, packed, scales, dequant, row_scale) -> None:
    lib = _lib.require()
    x = aligned_rows(x)
    status = lib.nvfp4_quantize_activations(
        x.data_ptr(), ABI_DTYPE_CODE[x.dtype], x.shape[0], x.shape[1], x.stride(0), data_ptr(static_scale),
        data_ptr(row_scale), data_ptr(multiplier), data_ptr(packed), data_ptr(scales), data_ptr(dequant), current_stream(x.device),
    )
    _lib.check(status, "nvfp4_quantize_activations")


def _check_quantizer_args(fn: str, x: torch.Tensor, static_scale: torch.Tensor | None, multiplier: torch.Tensor | None) -> None:
    require_tensor(fn, "x", x)
    require_dtype(fn, "x", x, ACTIVATION_DTYPES)
    require_dim(fn, "x", x, 2)
    require_multiple(fn, "x.shape[1] (K)", x.shape[1], 16)
    if x.stride(1) != 1:
        raise ValueError(f"{fn}: x must have unit stride along K (rows may be strided), got strides {x.stride()}")
    if static_scale is not None:
        require_scale_scalar(fn, "static_scale", static_scale)
        require_same_device(fn, "x", x, static_scale=static_scale)
    if multiplier is not None:
        require_scale_scalar(fn, "scale_multiplier", multiplier)
        require_same_device(fn, "x", x, scale_multiplier=multiplier)


def check_gemm_args(fn: str, act, w_packed, w_scale, alpha, bias, out_dtype, w_scale_shape: tuple[int, ...] | None = None) -> None:
    """The checks every GEMM op shares; w_scale_shape: the runtime scale buffer's shape (default: linear [N, K/16])."""
    require_tensor(fn, "act", act)
    require_dim(fn, "act", act, 2)
    m, k = act.shape
    require_multiple(fn, "act.shape[1] (K)", k, 16)
    require_dtype(fn, "w_packed", w_packed, (torch.uint8,))
    require_shape(fn, "w_packed", w_packed, (w_packed.shape[0], k // 2))
    n = w_packed.shape[0]
    require_dtype(fn, "w_scale", w_scale, (torch.uint8,))
    require_shape(fn, "w_scale", w_scale, w_scale_shape if w_scale_shape is not None else (n, k // 16))
    require_dtype(fn, "alpha", alpha, (torch.float32,))
    if alpha.numel() not in (1, m):
        raise ValueError(f"{fn}: alpha must hold 1 or M={m} values, got {alpha.numel()}")
    if bias is not None:
        require_shape(fn, "bias", bias, (n,))
        require_dtype(fn, "bias", bias, (out_dtype,))
    if out_dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: out_dtype must be bfloat16 or float16, got {out_dtype}")
    require_same_device(fn, "act", act, w_packed=w_packed, w_scale=w_scale, alpha=alpha, bias=bias)


# --- activation quantizer: NVFP4 output (packed + swizzled scales) -----------------------------------------------

def quantize_activations_nvfp4_impl(
    x: torch.Tensor, static_scale: torch.Tensor | None, scale_multiplier: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_quantizer_args("nvfp4.ops.quantize_activations_nvfp4", x, static_scale, scale_multiplier)
    if x.device.type != "cuda":
        packed, scales, _, row_scale = quantize_activations_reference(x, static_scale, scale_multiplier)
        return packed, scales, row_scale
    rows, cols = x.shape
    packed = torch.empty((rows, cols // 2), dtype=torch.uint8, device=x.device)
    scales = torch.empty((swizzled_scale_bytes(rows, cols // 16),), dtype=torch.uint8, device=x.device)
    row_scale = torch.empty((rows,), dtype=torch.float32, device=x.device)
    _launch_quantizer(x, static_scale, scale_multiplier, packed, scales, None, row_scale)
    return packed, scales, row_scale


@torch.library.custom_op("nvfp4::quantize_activations_nvfp4", mutates_args=())
def quantize_activations_nvfp4(
    x: torch.Tensor, static_scale: torch.Tensor | None, scale_multiplier: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return quantize_activations_nvfp4_impl(x, static_scale, scale_multiplier)


@quantize_activations_nvfp4.register_fake
def _(x, static_scale, scale_multiplier=None):
    rows, cols = x.shape
    return (
        x.new_empty((rows, cols // 2), dtype=torch.uint8),
        x.new_empty((swizzled_scale_bytes(rows, cols // 16),), dtype=torch.uint8),
        x.new_empty((rows,), dtype=torch.float32),
    )


# --- activation quantizer: exact dequantized bf16 output (operand of the Hopper GEMM) ------------------------------

def quantize_activations_dequant_impl(
    x: torch.Tensor, static_scale: torch.Tensor | None, scale_multiplier: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_quantizer_args("nvfp4.ops.quantize_activations_dequant", x, static_scale, scale_multiplier)
    if x.device.type != "cuda":
        _, _, dequant, row_scale = quantize_activations_reference(x, static_scale, scale_multiplier)
        return dequant, row_scale
    rows, cols = x.shape
    dequant = torch.empty((rows, cols), dtype=torch.bfloat16, device=x.device)
    row_scale = torch.empty((rows,), dtype=torch.float32, device=x.device)
    _launch_quantizer(x, static_scale, scale_multiplier, None, None, dequant, row_scale)
    return dequant, row_scale


@torch.library.custom_op("nvfp4::quantize_activations_dequant", mutates_args=())
def quantize_activations_dequant(
    x: torch.Tensor, static_scale: torch.Tensor | None, scale_multiplier: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_activations_dequant_impl(x, static_scale, scale_multiplier)


@quantize_activations_dequant.register_fake
def _(x, static_scale, scale_multiplier=None):
    rows, cols = x.shape
    return x.new_empty((rows, cols), dtype=torch.bfloat16), x.new_empty((rows,), dtype=torch.float32)


__all__ = [
    "call", "check_gemm_args", "aligned_rows", "current_stream", "data_ptr",
    "quantize_activations_nvfp4", "quantize_activations_nvfp4_impl",
    "quantize_activations_dequant", "quantize_activations_dequant_impl",
]
