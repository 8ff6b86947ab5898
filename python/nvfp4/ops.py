"""torch.library custom ops over the C ABI, each with a fake (meta) implementation for torch.compile.

e4m3 scales cross the op boundary as uint8 views (opcheck cannot handle float8 arguments on CPU). The CUDA stream is
read inside each op at call time, never passed as an argument: dynamo would bake it in, and graph capture runs on a
side stream. Outputs are torch allocations, so they come from the caching allocator and CUDA-graph pools.

Eager calls skip the custom-op dispatcher (~10 us) through `call`, which goes straight to the implementation
unless torch.compile is tracing.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import _lib
from .activation import quantize_activations_reference, row_global_scales
from .format import swizzled_scale_bytes
from .reference import gemm_reference

_DTYPE_CODE = {torch.bfloat16: 0, torch.float16: 1}


def call(op: Callable, impl: Callable, *args):
    if torch.compiler.is_compiling():
        return op(*args)
    return impl(*args)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _launch_quantizer(x, static_scale, packed, scales, dequant, row_scale) -> None:
    lib = _lib.require()
    status = lib.nvfp4_quantize_activations(
        x.data_ptr(), _DTYPE_CODE[x.dtype], x.shape[0], x.shape[1], x.stride(0), _ptr(static_scale),
        _ptr(row_scale), _ptr(packed), _ptr(scales), _ptr(dequant), _stream(x.device),
    )
    _lib.check(status, "nvfp4_quantize_activations")


# --- activation quantizer: NVFP4 output (packed + swizzled scales) -----------------------------------------------

def quantize_activations_nvfp4_impl(x: torch.Tensor, static_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if x.device.type != "cuda":
        packed, scales, _, row_scale = quantize_activations_reference(x, static_scale)
        return packed, scales, row_scale
    rows, cols = x.shape
    packed = torch.empty((rows, cols // 2), dtype=torch.uint8, device=x.device)
    scales = torch.empty((swizzled_scale_bytes(rows, cols // 16),), dtype=torch.uint8, device=x.device)
    row_scale = torch.empty((rows,), dtype=torch.float32, device=x.device)
    _launch_quantizer(x, static_scale, packed, scales, None, row_scale)
    return packed, scales, row_scale


@torch.library.custom_op("nvfp4::quantize_activations_nvfp4", mutates_args=())
def quantize_activations_nvfp4(x: torch.Tensor, static_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return quantize_activations_nvfp4_impl(x, static_scale)


@quantize_activations_nvfp4.register_fake
def _(x, static_scale):
    rows, cols = x.shape
    return (
        x.new_empty((rows, cols // 2), dtype=torch.uint8),
        x.new_empty((swizzled_scale_bytes(rows, cols // 16),), dtype=torch.uint8),
        x.new_empty((rows,), dtype=torch.float32),
    )


# --- activation quantizer: exact dequantized bf16 output (operand of the Hopper GEMM) ------------------------------

def quantize_activations_dequant_impl(x: torch.Tensor, static_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if x.device.type != "cuda":
        _, _, dequant, row_scale = quantize_activations_reference(x, static_scale)
        return dequant, row_scale
    rows, cols = x.shape
    dequant = torch.empty((rows, cols), dtype=torch.bfloat16, device=x.device)
    row_scale = torch.empty((rows,), dtype=torch.float32, device=x.device)
    _launch_quantizer(x, static_scale, None, None, dequant, row_scale)
    return dequant, row_scale


@torch.library.custom_op("nvfp4::quantize_activations_dequant", mutates_args=())
def quantize_activations_dequant(x: torch.Tensor, static_scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return quantize_activations_dequant_impl(x, static_scale)


@quantize_activations_dequant.register_fake
def _(x, static_scale):
    rows, cols = x.shape
    return x.new_empty((rows, cols), dtype=torch.bfloat16), x.new_empty((rows,), dtype=torch.float32)


# --- reference GEMM ----------------------------------------------------------------------------------------------

def mm_reference_impl(act, w_packed, w_scale, alpha, bias, out_dtype: torch.dtype) -> torch.Tensor:
    return gemm_reference(act, w_packed, w_scale, alpha, bias, out_dtype)


@torch.library.custom_op("nvfp4::mm_reference", mutates_args=())
def mm_reference(
    act: torch.Tensor, w_packed: torch.Tensor, w_scale: torch.Tensor, alpha: torch.Tensor,
    bias: torch.Tensor | None, out_dtype: torch.dtype,
) -> torch.Tensor:
    return mm_reference_impl(act, w_packed, w_scale, alpha, bias, out_dtype)


@mm_reference.register_fake
def _(act, w_packed, w_scale, alpha, bias, out_dtype):
    return act.new_empty((act.shape[0], w_packed.shape[0]), dtype=out_dtype)


# --- Hopper GEMM -------------------------------------------------------------------------------------------------

def mm_sm90_impl(act, w_packed, w_scales_swizzled, alpha, bias, out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    lib = _lib.require()
    m, k = act.shape
    n = w_packed.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=act.device)
    import ctypes

    size = ctypes.c_size_t(0)
    _lib.check(lib.nvfp4_sm90_gemm_workspace_size(m, n, k, int(invariant), ctypes.byref(size)), "nvfp4_sm90_gemm")
    workspace = torch.empty((size.value,), dtype=torch.uint8, device=act.device) if size.value else None
    status = lib.nvfp4_sm90_gemm(
        act.data_ptr(), act.stride(0), m, n, k, w_packed.data_ptr(), w_scales_swizzled.data_ptr(), alpha.data_ptr(),
        int(alpha.numel() != 1), _ptr(bias), out.data_ptr(), _DTYPE_CODE[out_dtype], out.stride(0), int(invariant),
        _ptr(workspace), size.value, _stream(act.device),
    )
    _lib.check(status, "nvfp4_sm90_gemm")
    return out


@torch.library.custom_op("nvfp4::mm_sm90", mutates_args=())
def mm_sm90(
    act: torch.Tensor, w_packed: torch.Tensor, w_scales_swizzled: torch.Tensor, alpha: torch.Tensor,
    bias: torch.Tensor | None, out_dtype: torch.dtype, invariant: bool,
) -> torch.Tensor:
    return mm_sm90_impl(act, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


@mm_sm90.register_fake
def _(act, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant):
    return act.new_empty((act.shape[0], w_packed.shape[0]), dtype=out_dtype)


__all__ = [
    "call",
    "quantize_activations_nvfp4", "quantize_activations_nvfp4_impl",
    "quantize_activations_dequant", "quantize_activations_dequant_impl",
    "mm_reference", "mm_reference_impl",
    "mm_sm90", "mm_sm90_impl",
    "row_global_scales",
]
