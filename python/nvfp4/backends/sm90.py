"""Hopper (sm_90a: H100/H200, compute capability 9.0): NVFP4 weights dequantized in registers, bf16 wgmma.

Runtime layout (prepack / unprepack below: the one definition; cpp/kernels/sm90/layout.h describes how the kernel
reads it): weights and block scales interleaved in the order of the kernel's wgmma register fragments, so that a
warp reads a 16-row slab's 64-k group with one 16-byte and one 8-byte load per lane and dequantizes whole 32-bit
words. The e4m3 scales live inside that buffer (the layer's weight_scale buffer is empty): 0.5625 bytes per weight.

One C call per layer call (nvfp4_sm90_linear): W4A4 activations are quantized per row inside the GEMM (up to 16
rows) or by the standalone quantizer in the same call; W4A16 takes bf16 activations as they are. The C library's plan
(cpp/kernels/sm90/config.h) is the only copy of the configuration rules; plan() reads it.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Literal

import torch

from .. import _lib, ops
from ..checks import ACTIVATION_DTYPES, require_dim, require_dtype, require_same_device, require_scale_scalar
from ..checks import require_shape, require_tensor
from ..format import pack_e2m1, round_up, unpack_e2m1
from .base import Backend

if TYPE_CHECKING:  # pragma: no cover
    from ..linear import NvFp4Linear
    from ..moe_linear import NvFp4GroupedLinear

_c_i64, _c_int, _c_ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
_c_int_p = ctypes.POINTER(ctypes.c_int)
_c_size_p = ctypes.POINTER(ctypes.c_size_t)
_c_i64_p = ctypes.POINTER(ctypes.c_int64)

# The C ABI of this backend (cpp/include/nvfp4/nvfp4.h; tests/test_abi_header.py compares the two).
_lib.declare({
    "nvfp4_sm90_prepacked_bytes": (_c_int, [_c_i64, _c_i64, _c_size_p]),
    "nvfp4_sm90_linear_workspace_size": (_c_int, [_c_i64, _c_i64, _c_i64, _c_int, _c_int, _c_i64, _c_int, _c_size_p]),
    "nvfp4_sm90_linear_plan": (_c_int, [_c_i64, _c_i64, _c_i64, _c_int, _c_int, _c_i64] + [_c_int_p] * 6),
    "nvfp4_sm90_linear": (
        _c_int,
        [_c_ptr, _c_int, _c_i64, _c_int, _c_ptr, _c_ptr, _c_int, _c_i64, _c_i64, _c_i64, _c_ptr, _c_ptr, _c_ptr,
         _c_i64, _c_int, _c_i64, _c_ptr, _c_ptr, ctypes.c_size_t, _c_ptr],
    ),
    "nvfp4_sm90_occupancy": (_c_int, [_c_int, _c_int, _c_int_p, _c_int_p]),
    "nvfp4_sm90_set_split_reduce": (_c_int, [_c_int]),
    "nvfp4_sm90_set_fused": (_c_int, [_c_int]),
    "nvfp4_sm90_set_sm_count": (_c_int, [_c_int]),
    "nvfp4_sm90_set_pdl": (_c_int, [_c_int]),
    "nvfp4_sm90_grouped_plan": (_c_int, [_c_i64, _c_int, _c_i64, _c_i64, _c_int, _c_int_p, _c_int_p, _c_i64_p, _c_int_p]),
    "nvfp4_sm90_grouped_workspace_size": (_c_int, [_c_i64, _c_int, _c_i64, _c_i64, _c_int, _c_size_p]),
    "nvfp4_sm90_grouped_linear": (
        _c_int,
        [_c_ptr, _c_int, _c_i64, _c_int, _c_ptr, _c_ptr, _c_i64, _c_int, _c_ptr, _c_i64, _c_i64, _c_ptr, _c_ptr,
         _c_i64, _c_ptr, ctypes.c_size_t, _c_ptr],
    ),
})

# act codes of nvfp4_sm90_linear (NVFP4_SM90_ACT_* of nvfp4.h)
ACT_BF16, ACT_QUANT_PER_TOKEN, ACT_QUANT_STATIC = 0, 1, 2


# --- runtime layout ------------------------------------------------------------------------------------------------

SLAB_ROWS = 16
KGROUP = 64
GROUP_BYTES = 576  # 512 bytes of codes (32 lanes x 4 words) + 64 bytes of block scales (8 rows-pairs x 8)
# Bit positions of e2m1 code bits 0..3 in a lane's word for k16 step s, per wgmma A register a0..a3 (pair p) and
# bf16 half (lo: even k, hi: odd k). The kernel takes a0 = w & 0x81C081C0, a1 = (w << 3) & ..., a2 = (w << 6) & ...
# and a3 by three shifts: each code lands as e2m1 * 2^-126 in bf16 (sign at 15, magnitude at 8..6).
_BITS = (
    ((6, 7, 8, 15), (22, 23, 24, 31)),  # a0: row g,   k 2t | 2t+1
    ((3, 4, 5, 12), (19, 20, 21, 28)),  # a1: row g+8, k 2t | 2t+1
    ((0, 1, 2, 9), (16, 17, 18, 25)),  # a2: row g,   k 2t+8 | 2t+9
    ((10, 11, 13, 14), (26, 27, 29, 30)),  # a3: row g+8, k 2t+8 | 2t+9
)


def prepacked_shape(n: int, k: int) -> tuple[int, int, int]:
    return (round_up(n, SLAB_ROWS) // SLAB_ROWS, round_up(k, KGROUP) // KGROUP, GROUP_BYTES)


def prepack(weight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """ModelOpt layout (uint8 [N, K/2], e4m3 [N, K/16]) -> the Hopper runtime layout uint8 [N16/16, K64/64, 576].

    N is padded to 16 rows and K to 64 with zero codes and zero scales. In each (slab, 64-k group): lane L = 4g + t
    owns bytes [16L, 16L + 16) = four little-endian words, word s holding the codes of rows g and g+8 at
    k = 16s + {2t, 2t+1, 2t+8, 2t+9} at the bit positions of _BITS; bytes [512 + 8g, 512 + 8g + 8) hold the block
    scales of rows g (even bytes) and g+8 (odd bytes) for k16 steps 0..3.
    """
    n, half_k = weight.shape
    k = half_k * 2
    slabs, groups, _ = prepacked_shape(n, k)
    codes = torch.zeros((slabs * SLAB_ROWS, groups * KGROUP), dtype=torch.uint8, device=weight.device)
    codes[:n, :k] = unpack_e2m1(weight)
    # [slab, row half, g, group, step, k half, t, element]: row = 8 * (row half) + g, k = 16 step + 8 (k half) + 2t + e
    c = codes.reshape(slabs, 2, 8, groups, 4, 2, 4, 2)
    word = torch.zeros((slabs, 8, groups, 4, 4), dtype=torch.int32, device=weight.device)  # slab, g, group, step, t
    for row_half in range(2):
        for k_half in range(2):
            for e in range(2):
                v = c[:, row_half, :, :, :, k_half, :, e].to(torch.int32)
                for b, pos in enumerate(_BITS[row_half + 2 * k_half][e]):
                    word |= ((v >> b) & 1) << pos
    weight_bytes = word.permute(0, 2, 1, 4, 3).contiguous().view(torch.uint8).reshape(slabs, groups, 512)
    scales = torch.zeros((slabs * SLAB_ROWS, groups * 4), dtype=torch.uint8, device=weight.device)
    scales[:n, : k // 16] = weight_scale.view(torch.uint8)
    # [slab, row half, g, group, step] -> [slab, group, g, step, row half]
    scale_bytes = scales.reshape(slabs, 2, 8, groups, 4).permute(0, 3, 2, 4, 1).reshape(slabs, groups, 64)
    return torch.cat([weight_bytes, scale_bytes], dim=2).contiguous()


def unprepack(buf: torch.Tensor, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inverse of prepack: (weight uint8 [N, K/2], weight_scale e4m3 [N, K/16])."""
    slabs, groups, _ = buf.shape
    word = buf[:, :, :512].contiguous().view(torch.int32).reshape(slabs, groups, 8, 4, 4).permute(0, 2, 1, 4, 3)
    c = torch.empty((slabs, 2, 8, groups, 4, 2, 4, 2), dtype=torch.uint8, device=buf.device)
    for row_half in range(2):
        for k_half in range(2):
            for e in range(2):
                v = torch.zeros(word.shape, dtype=torch.int32, device=buf.device)
                for b, pos in enumerate(_BITS[row_half + 2 * k_half][e]):
                    v |= ((word >> pos) & 1) << b
                c[:, row_half, :, :, :, k_half, :, e] = v.to(torch.uint8)
    codes = c.reshape(slabs * SLAB_ROWS, groups * KGROUP)[:n, :k]
    scales = buf[:, :, 512:].reshape(slabs, groups, 8, 4, 2).permute(0, 4, 2, 1, 3).reshape(slabs * SLAB_ROWS, groups * 4)
    return pack_e2m1(codes.contiguous()), scales[:n, : k // 16].contiguous().view(torch.float8_e4m3fn)


# --- the op ----------------------------------------------------------------------------------------------------------

def _check_x(fn: str, x: torch.Tensor, act: int) -> tuple[int, int]:
    """(rows, K) of the activations of an sm90 call, after the checks every such call makes."""
    require_tensor(fn, "x", x)
    require_dim(fn, "x", x, 2)
    require_dtype(fn, "x", x, (torch.bfloat16,) if act == ACT_BF16 else ACTIVATION_DTYPES)
    rows, k = x.shape
    if k % 16 or k < 16:
        raise ValueError(f"{fn}: x.shape[1] (K) must be a positive multiple of 16, got {k}")
    if x.stride(1) != 1:
        raise ValueError(f"{fn}: x must have unit stride along K (rows may be strided), got strides {x.stride()}")
    return rows, k


def linear_sm90_impl(x: torch.Tensor, w_prepacked: torch.Tensor, alpha: torch.Tensor, static_scale: torch.Tensor | None,
                     bias: torch.Tensor | None, act: int, invariant: bool, n: int, chunk_k: int = 0) -> torch.Tensor:
    """out [M, n] (x's dtype) = nvfp4_sm90_linear; act ACT_BF16: x is the bf16 operand and alpha 1 or M values;
    ACT_QUANT_*: x is quantized per row inside the call and alpha is the weight's global scale."""
    fn = "nvfp4.ops.linear_sm90"
    m, k = _check_x(fn, x, act)
    require_dtype(fn, "w_prepacked", w_prepacked, (torch.uint8,))
    require_shape(fn, "w_prepacked", w_prepacked, prepacked_shape(n, k))
    if not w_prepacked.is_contiguous():
        raise ValueError(f"{fn}: w_prepacked must be contiguous")
    require_dtype(fn, "alpha", alpha, (torch.float32,))
    if alpha.numel() not in ((1, m) if act == ACT_BF16 else (1,)):
        raise ValueError(f"{fn}: alpha must hold 1{' or M=' + str(m) if act == ACT_BF16 else ''} values, got {alpha.numel()}")
    if act == ACT_QUANT_STATIC:
        require_scale_scalar(fn, "static_scale", static_scale)
    if bias is not None:
        require_shape(fn, "bias", bias, (n,))
        require_dtype(fn, "bias", bias, (x.dtype,))
    require_same_device(fn, "x", x, w_prepacked=w_prepacked, alpha=alpha, static_scale=static_scale, bias=bias)
    x = ops.aligned_rows(x)
    alpha = alpha.contiguous()
    lib = _lib.require()
    size = ctypes.c_size_t(0)
    _lib.check(lib.nvfp4_sm90_linear_workspace_size(m, n, k, act, int(invariant), chunk_k, 0, ctypes.byref(size)),
               "nvfp4_sm90_linear")
    workspace = torch.empty((size.value,), dtype=torch.uint8, device=x.device) if size.value else None
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    status = lib.nvfp4_sm90_linear(
        x.data_ptr(), ops.ABI_DTYPE_CODE[x.dtype], x.stride(0), act, ops.data_ptr(static_scale), alpha.data_ptr(),
        int(alpha.numel() != 1), m, n, k, w_prepacked.data_ptr(), ops.data_ptr(bias), out.data_ptr(), out.stride(0),
        int(invariant), chunk_k, None, ops.data_ptr(workspace), size.value, ops.current_stream(x.device),
    )
    _lib.check(status, "nvfp4_sm90_linear")
    return out


@torch.library.custom_op("nvfp4::linear_sm90", mutates_args=())
def linear_sm90(x: torch.Tensor, w_prepacked: torch.Tensor, alpha: torch.Tensor, static_scale: torch.Tensor | None,
                bias: torch.Tensor | None, act: int, invariant: bool, n: int, chunk_k: int = 0) -> torch.Tensor:
    return linear_sm90_impl(x, w_prepacked, alpha, static_scale, bias, act, invariant, n, chunk_k)


@linear_sm90.register_fake
def _(x, w_prepacked, alpha, static_scale, bias, act, invariant, n, chunk_k=0):
    return x.new_empty((x.shape[0], n))


def grouped_linear_sm90_impl(x: torch.Tensor, w_prepacked: torch.Tensor, alphas: torch.Tensor,
                             static_scales: torch.Tensor | None, offsets: torch.Tensor, act: int, n: int) -> torch.Tensor:
    """out [S, n] (x's dtype) = nvfp4_sm90_grouped_linear: rows offsets[e]:offsets[e+1] of x [S, K] through expert e
    of w_prepacked [E, ...] (each expert's runtime layout), with alphas[e] (and static_scales[e]); every row gets the
    bits of an invariant linear_sm90 call of its expert. offsets must be non-decreasing from 0 to S (on the GPU they
    are not read here: the kernel clamps them, so a bad value gives wrong rows, never an access out of bounds)."""
    fn = "nvfp4.ops.grouped_linear_sm90"
    s, k = _check_x(fn, x, act)
    require_dtype(fn, "w_prepacked", w_prepacked, (torch.uint8,))
    require_dim(fn, "w_prepacked", w_prepacked, 4)
    e = w_prepacked.shape[0]
    require_shape(fn, "w_prepacked", w_prepacked, (e, *prepacked_shape(n, k)))
    if not w_prepacked.is_contiguous():
        raise ValueError(f"{fn}: w_prepacked must be contiguous")
    require_dtype(fn, "alphas", alphas, (torch.float32,))
    require_shape(fn, "alphas", alphas, (e,))
    require_dtype(fn, "offsets", offsets, (torch.int64,))
    require_shape(fn, "offsets", offsets, (e + 1,))
    if act == ACT_QUANT_STATIC:
        require_tensor(fn, "static_scales", static_scales)
        require_dtype(fn, "static_scales", static_scales, (torch.float32,))
        require_shape(fn, "static_scales", static_scales, (e,))
    require_same_device(fn, "x", x, w_prepacked=w_prepacked, alphas=alphas, static_scales=static_scales,
                        offsets=offsets)
    out = torch.empty((s, n), dtype=x.dtype, device=x.device)
    if s == 0:
        return out
    x = ops.aligned_rows(x)
    alphas, offsets = alphas.contiguous(), offsets.contiguous()
    static_scales = None if static_scales is None else static_scales.contiguous()
    lib = _lib.require()
    size = ctypes.c_size_t(0)
    _lib.check(lib.nvfp4_sm90_grouped_workspace_size(s, e, n, k, act, ctypes.byref(size)), "nvfp4_sm90_grouped_linear")
    workspace = torch.empty((size.value,), dtype=torch.uint8, device=x.device) if size.value else None
    status = lib.nvfp4_sm90_grouped_linear(
        x.data_ptr(), ops.ABI_DTYPE_CODE[x.dtype], x.stride(0), act, ops.data_ptr(static_scales), alphas.data_ptr(), s,
        e, offsets.data_ptr(), n, k, w_prepacked.data_ptr(), out.data_ptr(), out.stride(0), ops.data_ptr(workspace),
        size.value, ops.current_stream(x.device),
    )
    _lib.check(status, "nvfp4_sm90_grouped_linear")
    return out


@torch.library.custom_op("nvfp4::grouped_linear_sm90", mutates_args=())
def grouped_linear_sm90(x: torch.Tensor, w_prepacked: torch.Tensor, alphas: torch.Tensor,
                        static_scales: torch.Tensor | None, offsets: torch.Tensor, act: int, n: int) -> torch.Tensor:
    return grouped_linear_sm90_impl(x, w_prepacked, alphas, static_scales, offsets, act, n)


@grouped_linear_sm90.register_fake
def _(x, w_prepacked, alphas, static_scales, offsets, act, n):
    return x.new_empty((x.shape[0], n))


# --- the backend ---------------------------------------------------------------------------------------------------

_ACT_OF_MODE = {"none": ACT_BF16, "per-token": ACT_QUANT_PER_TOKEN, "static": ACT_QUANT_STATIC}


class Sm90Backend(Backend):
    name = "sm90"
    arch_sm = 90
    capabilities = frozenset({(9, 0)})
    gemm_symbol = "nvfp4_sm90_linear"

    def prepare(self, weight: torch.Tensor, weight_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prepack(weight, weight_scale), torch.empty((0,), dtype=torch.uint8, device=weight.device)

    def unprepare(self, weight, weight_scale, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return unprepack(weight, n, k)

    def forward(self, layer: "NvFp4Linear", x2: torch.Tensor) -> torch.Tensor:
        act = _ACT_OF_MODE[layer.activation]
        if act == ACT_BF16 and x2.dtype != torch.bfloat16:
            raise TypeError(f"NvFp4Linear.forward: W4A16 on {self.name} takes bfloat16 x, got {x2.dtype}")
        static = layer.input_scale.reshape(1) if act == ACT_QUANT_STATIC else None
        bias = None if layer.bias is None else layer.bias.to(x2.dtype)
        return ops.call(linear_sm90, linear_sm90_impl, x2, layer.weight, layer.weight_scale_2.reshape(1), static, bias,
                        act, layer.batch_invariant, layer.out_features)

    def grouped_forward(self, layer: "NvFp4GroupedLinear", x_sorted: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """One launch for all experts (nvfp4_sm90_grouped_linear): each row gets the bits of its expert's invariant
        forward, in either mode, with no host synchronisation (offsets stay on the GPU)."""
        act = _ACT_OF_MODE[layer.activation]
        if act == ACT_BF16 and x_sorted.dtype != torch.bfloat16:
            raise TypeError(f"NvFp4GroupedLinear.forward: W4A16 on {self.name} takes bfloat16 x, got {x_sorted.dtype}")
        static = layer.input_scale if act == ACT_QUANT_STATIC else None
        return ops.call(grouped_linear_sm90, grouped_linear_sm90_impl, x_sorted, layer.weight, layer.weight_scale_2,
                        static, offsets, act, layer.out_features)


BACKEND = Sm90Backend()


# --- the plan the library follows, and the switches for tests and benchmarks (none changes a bit) ------------------

SplitReduce = Literal["none", "cluster", "kernel"]
ForcedReduce = Literal["auto", "cluster", "kernel"]
ForcedFused = Literal["auto", "always", "never"]
# NVFP4_SM90_REDUCE_* of nvfp4.h
_REDUCE_NAMES: dict[int, SplitReduce] = {0: "none", 1: "cluster", 2: "kernel"}
_REDUCE_CODES = {"auto": 0, "cluster": 1, "kernel": 2}
_FUSED_CODES = {"auto": 0, "always": 1, "never": 2}


@dataclass(frozen=True)
class Sm90Plan:
    token_tile: int  # wgmma N of the kernel: 8, 16, 32, 64 or 128
    chunk_k: int  # K chunk length; fixes every output's reduction order
    chunks: int  # number of K chunks
    splits: int  # CTAs a tile's chunks are spread over (1: whole K per CTA)
    reduce: SplitReduce  # how split calls add their chunk sums ("none": the call does not split)
    fused: bool  # activations quantized inside the GEMM


def plan(m: int, n: int, k: int, activation: str = "per-token", invariant: bool = True, chunk_k: int = 0) -> Sm90Plan:
    """The plan nvfp4_sm90_linear follows for an (m, n, k) call on the current CUDA device."""
    lib = _lib.require()
    out = [ctypes.c_int(0) for _ in range(6)]
    _lib.check(lib.nvfp4_sm90_linear_plan(m, n, k, _ACT_OF_MODE[activation], int(invariant), chunk_k,
                                          *(ctypes.byref(v) for v in out)), "nvfp4_sm90_linear_plan")
    tile, chunk, chunks, splits, reduce, fused = (v.value for v in out)
    return Sm90Plan(tile, chunk, chunks, splits, _REDUCE_NAMES[reduce], bool(fused))


def _set(name: str, codes: dict[str, int], mode: str, what: str) -> None:
    if mode not in codes:
        raise ValueError(f"{what} must be one of {sorted(codes)} (got {mode!r})")
    _lib.check(getattr(_lib.require(), name)(codes[mode]), name)


def set_split_reduce(mode: ForcedReduce) -> None:
    """From now on, in this process, split calls add their chunk sums the given way. Forcing "cluster" makes calls
    fail with a clear error where the device cannot schedule the cluster."""
    _set("nvfp4_sm90_set_split_reduce", _REDUCE_CODES, mode, "split reduction mode")


def set_fused(mode: ForcedFused) -> None:
    """From now on, in this process, quantize activations inside the GEMM automatically, wherever it serves, or never."""
    _set("nvfp4_sm90_set_fused", _FUSED_CODES, mode, "fused quantizer mode")


def set_sm_count(sms: int) -> None:
    """From now on, in this process, plan as if the GPU had `sms` SMs (0: the device's own count)."""
    if not isinstance(sms, int) or sms < 0:
        raise ValueError(f"sms must be an integer >= 0 (got {sms!r})")
    _lib.check(_lib.require().nvfp4_sm90_set_sm_count(sms), "nvfp4_sm90_set_sm_count")


def set_pdl(on: bool) -> None:
    """From now on, in this process, launch a GEMM that follows the standalone activation quantizer as its
    programmatic dependent (it copies its first weights while the quantizer runs), or not (the default)."""
    if not isinstance(on, bool):
        raise ValueError(f"on must be a bool (got {on!r})")
    _lib.check(_lib.require().nvfp4_sm90_set_pdl(int(on)), "nvfp4_sm90_set_pdl")


@contextlib.contextmanager
def planning(*, split_reduce: ForcedReduce = "auto", fused: ForcedFused = "auto", sm_count: int = 0,
             pdl: bool = False) -> Iterator[None]:
    """The switches within the block, back to automatic after it."""
    set_split_reduce(split_reduce)
    set_fused(fused)
    set_sm_count(sm_count)
    set_pdl(pdl)
    try:
        yield
    finally:
        set_split_reduce("auto")
        set_fused("auto")
        set_sm_count(0)
        set_pdl(False)


def forced_split_reduce(mode: ForcedReduce):
    return planning(split_reduce=mode)


@dataclass(frozen=True)
class Sm90GroupedPlan:
    token_tile: int  # wgmma N of the kernel: 8, 16, 32, 64 or 128
    chunk_k: int  # K chunk length (the rule of (N, K), as an invariant per-expert call)
    slots: int  # token tiles launched per 128-row weight tile (a bound on the experts' tiles)
    fused: bool  # activations quantized inside the GEMM


def grouped_plan(rows: int, num_experts: int, n: int, k: int, activation: str = "per-token") -> Sm90GroupedPlan:
    """The plan nvfp4_sm90_grouped_linear follows for `rows` rows over `num_experts` experts of n x k."""
    lib = _lib.require()
    tile, chunk, fused = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    slots = ctypes.c_int64(0)
    _lib.check(lib.nvfp4_sm90_grouped_plan(rows, num_experts, n, k, _ACT_OF_MODE[activation], ctypes.byref(tile),
                                           ctypes.byref(chunk), ctypes.byref(slots), ctypes.byref(fused)),
               "nvfp4_sm90_grouped_plan")
    return Sm90GroupedPlan(tile.value, chunk.value, slots.value, bool(fused.value))
