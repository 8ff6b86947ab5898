"""Hopper (sm_90a: H100/H200, compute capability 9.0): NVFP4 weights dequantized in registers, bf16 wgmma.

Runtime layout: the packed weight as stored, the block scales in the 128x4 swizzled layout the kernels read.
Activations: the CUDA quantizer's exact dequantized bf16 values (W4A4) or raw bf16 (W4A16).
The C library's plan (cpp/kernels/sm90/config.h, dispatch.cu) is the only copy of the configuration rules; plan()
reads it.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Literal

import torch

from .. import _lib, ops
from ..checks import require_dtype
from ..format import swizzle_scales, swizzled_scale_bytes, unswizzle_scales
from .base import Backend
from .reference import activation_operand

if TYPE_CHECKING:  # pragma: no cover
    from ..linear import NvFp4Linear

_c_i64, _c_int, _c_ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
_c_int_p = ctypes.POINTER(ctypes.c_int)

# The C ABI of this backend (cpp/include/nvfp4/nvfp4.h; tests/test_abi_header.py compares the two).
_lib.declare({
    "nvfp4_sm90_gemm_workspace_size": (_c_int, [_c_i64, _c_i64, _c_i64, _c_int, ctypes.POINTER(ctypes.c_size_t)]),
    "nvfp4_sm90_gemm_plan": (_c_int, [_c_i64, _c_i64, _c_i64, _c_int] + [_c_int_p] * 4),
    "nvfp4_sm90_set_split_reduce": (_c_int, [_c_int]),
    "nvfp4_sm90_occupancy": (_c_int, [_c_int, _c_int, _c_int_p, _c_int_p]),
    "nvfp4_sm90_gemm": (
        _c_int,
        [_c_ptr, _c_i64, _c_i64, _c_i64, _c_i64, _c_ptr, _c_ptr, _c_ptr, _c_int, _c_ptr, _c_ptr,
         _c_int, _c_i64, _c_int, _c_ptr, ctypes.c_size_t, _c_ptr],
    ),
})


# --- the GEMM op ---------------------------------------------------------------------------------------------------

def mm_sm90_impl(act, w_packed, w_scales_swizzled, alpha, bias, out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    fn = "nvfp4.ops.mm_sm90"
    n, k = w_packed.shape[0], act.shape[1] if act.dim() == 2 else 0
    ops.check_gemm_args(fn, act, w_packed, w_scales_swizzled, alpha, bias, out_dtype, (swizzled_scale_bytes(n, k // 16),))
    require_dtype(fn, "act", act, (torch.bfloat16,))
    act = ops.aligned_rows(act)
    lib = _lib.require()
    m, k = act.shape
    out = torch.empty((m, n), dtype=out_dtype, device=act.device)
    size = ctypes.c_size_t(0)
    _lib.check(lib.nvfp4_sm90_gemm_workspace_size(m, n, k, int(invariant), ctypes.byref(size)), "nvfp4_sm90_gemm")
    workspace = torch.empty((size.value,), dtype=torch.uint8, device=act.device) if size.value else None
    status = lib.nvfp4_sm90_gemm(
        act.data_ptr(), act.stride(0), m, n, k, w_packed.data_ptr(), w_scales_swizzled.data_ptr(), alpha.data_ptr(),
        int(alpha.numel() != 1), ops.data_ptr(bias), out.data_ptr(), ops.ABI_DTYPE_CODE[out_dtype], out.stride(0),
        int(invariant), ops.data_ptr(workspace), size.value, ops.current_stream(act.device),
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


# --- the backend ---------------------------------------------------------------------------------------------------

class Sm90Backend(Backend):
    name = "sm90"
    arch_sm = 90
    capabilities = frozenset({(9, 0)})
    gemm_symbol = "nvfp4_sm90_gemm"

    def prepare(self, weight: torch.Tensor, weight_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight, swizzle_scales(weight_scale)

    def unprepare(self, weight, weight_scale, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return weight, unswizzle_scales(weight_scale, n, k // 16).view(torch.float8_e4m3fn)

    def forward(self, layer: "NvFp4Linear", x2: torch.Tensor) -> torch.Tensor:
        if layer.activation == "none" and x2.dtype != torch.bfloat16:
            raise TypeError(f"NvFp4Linear.forward: W4A16 on {self.name} takes bfloat16 x, got {x2.dtype}")
        act, alpha = activation_operand(layer, x2)
        bias = None if layer.bias is None else layer.bias.to(x2.dtype)
        return ops.call(mm_sm90, mm_sm90_impl, act, layer.weight, layer.weight_scale, alpha, bias, x2.dtype,
                        layer.batch_invariant)


BACKEND = Sm90Backend()


# --- the plan the library follows, and the forced split reduction (tests, benchmarks) -----------------------------

SplitReduce = Literal["none", "cluster", "kernel"]
ForcedReduce = Literal["auto", "cluster", "kernel"]
# NVFP4_SM90_REDUCE_* of nvfp4.h
_REDUCE_NAMES: dict[int, SplitReduce] = {0: "none", 1: "cluster", 2: "kernel"}
_REDUCE_CODES = {"auto": 0, "cluster": 1, "kernel": 2}


@dataclass(frozen=True)
class Sm90Plan:
    token_tile: int  # wgmma N of the kernel: 8, 16, 32, 64 or 128
    chunk_k: int  # K chunk length; fixes every output's reduction order
    splits: int  # number of K chunks
    reduce: SplitReduce  # how split calls add their chunk sums ("none": the call does not split)


def plan(m: int, n: int, k: int, invariant: bool = True) -> Sm90Plan:
    """The plan nvfp4_sm90_gemm follows for an (m, n, k) call on the current CUDA device."""
    lib = _lib.require()
    out = [ctypes.c_int(0) for _ in range(4)]
    _lib.check(lib.nvfp4_sm90_gemm_plan(m, n, k, int(invariant), *(ctypes.byref(v) for v in out)), "nvfp4_sm90_gemm_plan")
    tile, chunk, splits, reduce = (v.value for v in out)
    return Sm90Plan(tile, chunk, splits, _REDUCE_NAMES[reduce])


def set_split_reduce(mode: ForcedReduce) -> None:
    """From now on, in this process, split calls add their chunk sums the given way (the bits do not change).

    Forcing "cluster" makes calls fail with a clear error where the device cannot schedule the cluster.
    """
    if mode not in _REDUCE_CODES:
        raise ValueError(f"split reduction mode must be one of {sorted(_REDUCE_CODES)} (got {mode!r})")
    lib = _lib.require()
    _lib.check(lib.nvfp4_sm90_set_split_reduce(_REDUCE_CODES[mode]), "nvfp4_sm90_set_split_reduce")


@contextlib.contextmanager
def forced_split_reduce(mode: ForcedReduce) -> Iterator[None]:
    """set_split_reduce(mode) within the block, back to "auto" after it."""
    set_split_reduce(mode)
    try:
        yield
    finally:
        set_split_reduce("auto")
