"""torch.library custom ops over the C ABI, each with a fake (meta) implementation for torch.compile.

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
from .reference import gemm_reference

ABI_DTYPE_CODE = {torch.bfloat16: 0, torch.float16: 1}  # NVFP4_DTYPE_BF16 / NVFP4_DTYPE_FP16 of nvfp4.h


def call(op: Callable, impl: Callable, *args):
    if torch.compiler.is_compiling():
        return op(*args)
    return impl(*args)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def _aligned_rows(x: torch.Tensor) -> torch.Tensor:
    """The kernels read 16-byte aligned rows; a view at an odd offset is copied (here, outside any trace)."""
    if x.data_ptr() % 16 or x.stride(0) % 8:
        return x.contiguous() if not x.is_contiguous() else x.clone()
    return x


def _launch_quantizer(x, static_scale, multiplier, packed, scales, dequant, row_scale) -> None:
    lib = _lib.require()
    x = _aligned_rows(x)
    status = lib.nvfp4_quantize_activations(
        x.data_ptr(), ABI_DTYPE_CODE[x.dtype], x.shape[0], x.shape[1], x.stride(0), _ptr(static_scale),
        _ptr(row_scale), _ptr(multiplier), _ptr(packed), _ptr(scales), _ptr(dequant), _stream(x.device),
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


def _check_gemm_args(fn: str, act, w_packed, w_scale, alpha, bias, out_dtype, swizzled: bool) -> None:
    require_tensor(fn, "act", act)
    require_dim(fn, "act", act, 2)
    m, k = act.shape
    require_multiple(fn, "act.shape[1] (K)", k, 16)
    require_dtype(fn, "w_packed", w_packed, (torch.uint8,))
    require_shape(fn, "w_packed", w_packed, (w_packed.shape[0], k // 2))
    n = w_packed.shape[0]
    require_dtype(fn, "w_scale", w_scale, (torch.uint8,))
    if swizzled:
        require_shape(fn, "w_scale", w_scale, (swizzled_scale_bytes(n, k // 16),))
    else:
        require_shape(fn, "w_scale", w_scale, (n, k // 16))
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


# --- reference GEMM ----------------------------------------------------------------------------------------------

def mm_reference_impl(act, w_packed, w_scale, alpha, bias, out_dtype: torch.dtype) -> torch.Tensor:
    _check_gemm_args("nvfp4.ops.mm_reference", act, w_packed, w_scale, alpha, bias, out_dtype, swizzled=False)
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
    _check_gemm_args("nvfp4.ops.mm_sm90", act, w_packed, w_scales_swizzled, alpha, bias, out_dtype, swizzled=True)
    require_dtype("nvfp4.ops.mm_sm90", "act", act, (torch.bfloat16,))
    act = _aligned_rows(act)
    lib = _lib.require()
    m, k = act.shape
    n = w_packed.shape[0]
    out = torch.empty((m, n), dtype=out_dtype, device=act.device)
    size = ctypes.c_size_t(0)
    _lib.check(lib.nvfp4_sm90_gemm_workspace_size(m, n, k, int(invariant), ctypes.byref(size)), "nvfp4_sm90_gemm")
    workspace = torch.empty((size.value,), dtype=torch.uint8, device=act.device) if size.value else None
    status = lib.nvfp4_sm90_gemm(
        act.data_ptr(), act.stride(0), m, n, k, w_packed.data_ptr(), w_scales_swizzled.data_ptr(), alpha.data_ptr(),
        int(alpha.numel() != 1), _ptr(bias), out.data_ptr(), ABI_DTYPE_CODE[out_dtype], out.stride(0), int(invariant),
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


# --- Blackwell GEMMs (SM100 sm_100a, SM120 sm_120a): NVFP4 activations x NVFP4 weights ---------------------------

def _mm_blackwell_impl(family: str, act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias,
                       out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    fn = f"nvfp4.ops.mm_{family}"
    for name, t in (("act_packed", act_packed), ("act_scales", act_scales), ("w_packed", w_packed),
                    ("w_scales_swizzled", w_scales_swizzled)):
        require_tensor(fn, name, t)
        require_dtype(fn, name, t, (torch.uint8,))
        if not t.is_contiguous():
            raise ValueError(f"{fn}: {name} must be contiguous")
    require_dim(fn, "act_packed", act_packed, 2)
    require_dim(fn, "w_packed", w_packed, 2)
    m, k = act_packed.shape[0], act_packed.shape[1] * 2
    n = w_packed.shape[0]
    require_multiple(fn, "K (2 * act_packed.shape[1])", k, 32)
    require_multiple(fn, "N (w_packed.shape[0])", n, 8)
    require_shape(fn, "w_packed", w_packed, (n, k // 2))
    require_shape(fn, "act_scales", act_scales, (swizzled_scale_bytes(m, k // 16),))
    require_shape(fn, "w_scales_swizzled", w_scales_swizzled, (swizzled_scale_bytes(n, k // 16),))
    require_dtype(fn, "alpha", alpha, (torch.float32,))
    if alpha.numel() not in (1, m) or not alpha.is_contiguous():
        raise ValueError(f"{fn}: alpha must be a contiguous tensor of 1 or M={m} values, got shape {tuple(alpha.shape)}")
    if out_dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: out_dtype must be bfloat16 or float16, got {out_dtype}")
    if bias is not None:
        require_shape(fn, "bias", bias, (n,))
        require_dtype(fn, "bias", bias, (out_dtype,))
    require_same_device(fn, "act_packed", act_packed, act_scales=act_scales, w_packed=w_packed,
                        w_scales_swizzled=w_scales_swizzled, alpha=alpha, bias=bias)
    lib = _lib.require()
    out = torch.empty((m, n), dtype=out_dtype, device=act_packed.device)
    size = ctypes.c_size_t(0)
    entry = f"nvfp4_{family}_gemm"
    _lib.check(getattr(lib, f"{entry}_workspace_size")(m, n, k, int(invariant), ctypes.byref(size)), entry)
    workspace = torch.empty((size.value,), dtype=torch.uint8, device=act_packed.device) if size.value else None
    status = getattr(lib, entry)(
        act_packed.data_ptr(), act_scales.data_ptr(), m, n, k, w_packed.data_ptr(), w_scales_swizzled.data_ptr(),
        alpha.data_ptr(), int(alpha.numel() != 1), _ptr(bias), out.data_ptr(), ABI_DTYPE_CODE[out_dtype], out.stride(0),
        int(invariant), _ptr(workspace), size.value, _stream(act_packed.device),
    )
    _lib.check(status, entry)
    return out


def mm_sm100_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    return _mm_blackwell_impl("sm100", act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


@torch.library.custom_op("nvfp4::mm_sm100", mutates_args=())
def mm_sm100(
    act_packed: torch.Tensor, act_scales: torch.Tensor, w_packed: torch.Tensor, w_scales_swizzled: torch.Tensor,
    alpha: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype, invariant: bool,
) -> torch.Tensor:
    return mm_sm100_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


@mm_sm100.register_fake
def _(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant):
    return act_packed.new_empty((act_packed.shape[0], w_packed.shape[0]), dtype=out_dtype)


def mm_sm120_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    return _mm_blackwell_impl("sm120", act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


@torch.library.custom_op("nvfp4::mm_sm120", mutates_args=())
def mm_sm120(
    act_packed: torch.Tensor, act_scales: torch.Tensor, w_packed: torch.Tensor, w_scales_swizzled: torch.Tensor,
    alpha: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype, invariant: bool,
) -> torch.Tensor:
    return mm_sm120_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


@mm_sm120.register_fake
def _(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant):
    return act_packed.new_empty((act_packed.shape[0], w_packed.shape[0]), dtype=out_dtype)


__all__ = [
    "call",
    "quantize_activations_nvfp4", "quantize_activations_nvfp4_impl",
    "quantize_activations_dequant", "quantize_activations_dequant_impl",
    "mm_reference", "mm_reference_impl",
    "mm_sm90", "mm_sm90_impl",
    "mm_sm100", "mm_sm100_impl", "mm_sm120", "mm_sm120_impl",
]
