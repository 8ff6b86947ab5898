"""Blackwell: CUTLASS block-scaled NVFP4 x NVFP4 tensor-core GEMMs, one table entry per family.

SM100 (sm_100a: B200/GB200, compute capability 10.0) and SM120 (sm_120a: RTX 50 / RTX PRO, 12.0) share the C ABI,
the runtime layout and the activation quantizer; they differ only in the compiled configurations
(cpp/kernels/sm100/, cpp/kernels/sm120/). Runtime layout: the packed weight zero-padded to the GEMM's operand
alignment (K to a multiple of 32: 16-byte TMA rows; N to a multiple of 8: 16-byte rows of the bf16/fp16 TMA store),
the block scales in the 128x4 swizzled layout (which already pads rows to 128 and groups to 4 with zeros).
The GEMM entry points take K only in whole tiles of the family's tile K (256 on SM100, 128 on SM120: the kernels'
kTileK, cpp/kernels/sm1x0/config.h), so the layer pads K to that with zero weights and zero scales, and activations
with zeros: no k-tile reads a byte past the operands. Operands that are not contiguous or not 16-byte aligned (user
views) are copied to aligned buffers before the call.
Compiled and host-checked only: no kernel of this module has run on hardware.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch

from .. import _lib, ops
from ..checks import require_dim, require_dtype, require_multiple, require_same_device, require_shape, require_tensor
from ..checks import ACTIVATION_DTYPES
from ..format import round_up, swizzle_scales, swizzled_scale_bytes, unswizzle_scales
from .base import Backend, NoKernelError

if TYPE_CHECKING:  # pragma: no cover
    from ..linear import NvFp4Linear

N_ALIGN = 8  # rows of the bf16/fp16 output: 16-byte rows for the TMA store
# K depth of every configuration's tile, per family (kTileK of cpp/kernels/<family>/config.h; the C ABI refuses a
# launch with any other K, tests/test_blackwell_host.py ties the two).
TILE_K = {"sm100": 256, "sm120": 128}
# The address alignment the kernels' TMA and vector loads need.
OPERAND_ALIGN = 16

_c_i64, _c_int, _c_ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p


def _declare(family: str) -> None:
    """The C ABI of one family (the Blackwell section of cpp/include/nvfp4/nvfp4.h)."""
    _lib.declare({
        f"nvfp4_{family}_num_configs": (_c_int, []),
        f"nvfp4_{family}_config_info": (_c_int, [_c_int, ctypes.c_char_p, ctypes.c_size_t]),
        f"nvfp4_{family}_select_config": (_c_int, [_c_i64, _c_i64, _c_i64, _c_int, ctypes.POINTER(_c_int)]),
        f"nvfp4_{family}_config_name": (_c_int, [_c_i64, _c_i64, _c_i64, _c_int, ctypes.c_char_p, ctypes.c_size_t]),
        f"nvfp4_{family}_host_check": (
            _c_int,
            [_c_int, _c_i64, _c_i64, _c_i64, _c_int, _c_int, ctypes.POINTER(_c_int), ctypes.POINTER(ctypes.c_size_t),
             ctypes.POINTER(_c_int)],
        ),
        f"nvfp4_{family}_gemm_workspace_size": (_c_int, [_c_i64, _c_i64, _c_i64, _c_int, ctypes.POINTER(ctypes.c_size_t)]),
        f"nvfp4_{family}_gemm": (
            _c_int,
            [_c_ptr, _c_ptr, _c_i64, _c_i64, _c_i64, _c_ptr, _c_ptr, _c_ptr, _c_int, _c_ptr, _c_ptr,
             _c_int, _c_i64, _c_int, _c_ptr, ctypes.c_size_t, _c_ptr],
        ),
    })


def aligned_operand(t: torch.Tensor | None) -> torch.Tensor | None:
    """t itself when contiguous and 16-byte aligned, else an aligned contiguous copy (a fresh allocation is)."""
    if t is None or (t.is_contiguous() and t.data_ptr() % OPERAND_ALIGN == 0):
        return t
    return t.contiguous() if not t.is_contiguous() else t.clone()


def mm_blackwell_impl(family: str, act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias,
                      out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    fn = f"nvfp4.ops.mm_{family}"
    for name, t in (("act_packed", act_packed), ("act_scales", act_scales), ("w_packed", w_packed),
                    ("w_scales_swizzled", w_scales_swizzled)):
        require_tensor(fn, name, t)
        require_dtype(fn, name, t, (torch.uint8,))
    require_dim(fn, "act_packed", act_packed, 2)
    require_dim(fn, "w_packed", w_packed, 2)
    m, k = act_packed.shape[0], act_packed.shape[1] * 2
    n = w_packed.shape[0]
    require_multiple(fn, "K (2 * act_packed.shape[1])", k, TILE_K[family])
    require_multiple(fn, "N (w_packed.shape[0])", n, N_ALIGN)
    require_shape(fn, "w_packed", w_packed, (n, k // 2))
    require_shape(fn, "act_scales", act_scales, (swizzled_scale_bytes(m, k // 16),))
    require_shape(fn, "w_scales_swizzled", w_scales_swizzled, (swizzled_scale_bytes(n, k // 16),))
    require_tensor(fn, "alpha", alpha)
    require_dtype(fn, "alpha", alpha, (torch.float32,))
    if alpha.numel() not in (1, m):
        raise ValueError(f"{fn}: alpha must hold 1 or M={m} values, got shape {tuple(alpha.shape)}")
    if out_dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: out_dtype must be bfloat16 or float16, got {out_dtype}")
    if bias is not None:
        require_shape(fn, "bias", bias, (n,))
        require_dtype(fn, "bias", bias, (out_dtype,))
    require_same_device(fn, "act_packed", act_packed, act_scales=act_scales, w_packed=w_packed,
                        w_scales_swizzled=w_scales_swizzled, alpha=alpha, bias=bias)
    act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias = (
        aligned_operand(t) for t in (act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias))
    lib = _lib.require()
    out = torch.empty((m, n), dtype=out_dtype, device=act_packed.device)
    size = ctypes.c_size_t(0)
    entry = f"nvfp4_{family}_gemm"
    _lib.check(getattr(lib, f"{entry}_workspace_size")(m, n, k, int(invariant), ctypes.byref(size)), entry)
    workspace = torch.empty((size.value,), dtype=torch.uint8, device=act_packed.device) if size.value else None
    status = getattr(lib, entry)(
        act_packed.data_ptr(), act_scales.data_ptr(), m, n, k, w_packed.data_ptr(), w_scales_swizzled.data_ptr(),
        alpha.data_ptr(), int(alpha.numel() != 1), ops.data_ptr(bias), out.data_ptr(), ops.ABI_DTYPE_CODE[out_dtype],
        out.stride(0), int(invariant), ops.data_ptr(workspace), size.value, ops.current_stream(act_packed.device),
    )
    _lib.check(status, entry)
    return out


def mm_sm100_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    return mm_blackwell_impl("sm100", act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


@torch.library.custom_op("nvfp4::mm_sm100", mutates_args=())
def mm_sm100(
    act_packed: torch.Tensor, act_scales: torch.Tensor, w_packed: torch.Tensor, w_scales_swizzled: torch.Tensor,
    alpha: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype, invariant: bool,
) -> torch.Tensor:
    return mm_sm100_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


def mm_sm120_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype: torch.dtype, invariant: bool) -> torch.Tensor:
    return mm_blackwell_impl("sm120", act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


@torch.library.custom_op("nvfp4::mm_sm120", mutates_args=())
def mm_sm120(
    act_packed: torch.Tensor, act_scales: torch.Tensor, w_packed: torch.Tensor, w_scales_swizzled: torch.Tensor,
    alpha: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype, invariant: bool,
) -> torch.Tensor:
    return mm_sm120_impl(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant)


def _fake(act_packed, act_scales, w_packed, w_scales_swizzled, alpha, bias, out_dtype, invariant):
    return act_packed.new_empty((act_packed.shape[0], w_packed.shape[0]), dtype=out_dtype)


mm_sm100.register_fake(_fake)
mm_sm120.register_fake(_fake)


class BlackwellBackend(Backend):
    activation_modes = ("static", "per-token")

    def __init__(self, family: str, capability: tuple[int, int], op, impl) -> None:
        self.name = family
        self.tile_k = TILE_K[family]
        self.arch_sm = int(family[2:])
        self.capabilities = frozenset({capability})
        self.gemm_symbol = f"nvfp4_{family}_gemm"
        self._op, self._impl = op, impl
        _declare(family)

    def prepare(self, weight: torch.Tensor, weight_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, half_k = weight.shape
        n_pad, k_pad = round_up(n, N_ALIGN), round_up(half_k * 2, self.tile_k)
        if (n_pad, k_pad) != (n, half_k * 2):
            weight = torch.nn.functional.pad(weight, (0, k_pad // 2 - half_k, 0, n_pad - n))
        groups = weight_scale.shape[1]
        if k_pad // 16 != groups:  # zero scale bytes for the zero-weight tail: finite, so 0 * scale stays 0
            weight_scale = torch.nn.functional.pad(weight_scale.view(torch.uint8), (0, k_pad // 16 - groups))
        return weight, swizzle_scales(weight_scale)

    def unprepare(self, weight, weight_scale, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        k_pad = round_up(k, self.tile_k)
        if tuple(weight.shape) != (n, k // 2):
            weight = weight[:n, : k // 2].contiguous()
        scales = unswizzle_scales(weight_scale, n, k_pad // 16)[:, : k // 16].contiguous()
        return weight, scales.view(torch.float8_e4m3fn)

    def forward(self, layer: "NvFp4Linear", x2: torch.Tensor) -> torch.Tensor:
        if layer.activation == "none":
            raise NoKernelError(
                f"NvFp4Linear.forward: W4A16 (activation='none') has no {self.name} kernel (the Blackwell GEMMs take "
                f"NVFP4 activations); use activation='static' or 'per-token', or backend='reference'"
            )
        static = layer.input_scale.reshape(1) if layer.input_scale is not None else None
        k_pad = round_up(layer.in_features, self.tile_k)
        if k_pad != layer.in_features:
            x2 = torch.nn.functional.pad(x2, (0, k_pad - layer.in_features))
        packed, scales, alpha = ops.call(ops.quantize_activations_nvfp4, ops.quantize_activations_nvfp4_impl, x2, static,
                                         layer.weight_scale_2.reshape(1))
        n_pad = layer.weight.shape[0]
        bias = None if layer.bias is None else layer.bias.to(x2.dtype)
        if bias is not None and n_pad != layer.out_features:
            bias = torch.nn.functional.pad(bias, (0, n_pad - layer.out_features))
        out = ops.call(self._op, self._impl, packed, scales, layer.weight, layer.weight_scale, alpha, bias, x2.dtype,
                       layer.batch_invariant)
        return out[:, : layer.out_features] if n_pad != layer.out_features else out


SM100 = BlackwellBackend("sm100", (10, 0), mm_sm100, mm_sm100_impl)
SM120 = BlackwellBackend("sm120", (12, 0), mm_sm120, mm_sm120_impl)
