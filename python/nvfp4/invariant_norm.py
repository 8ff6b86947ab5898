"""Batch-invariant RMSNorm: the HF Llama formula in one fixed order, bitwise equal on CPU and CUDA.

HF's LlamaRMSNorm computes `weight * (x_f32 * rsqrt(x_f32.pow(2).mean(-1) + eps)).to(input_dtype)`. On CUDA torch's
reduction picks its block shape (and with it the order of the sum) from the number of rows, so a row's bits can
depend on the batch it is in. `InvariantRMSNorm` computes every row as a pure function of that row, its weight and
eps, in this order (the specification; the CUDA kernel cpp/kernels/rms_norm.cu and nvfp4.h follow it):

For a row x of length H (bf16 or fp16), weight w (same dtype), eps (a Python float):

1. xf = fp32(x); sq[i] = xf[i] * xf[i] (fp32, correctly rounded, no FMA).
2. Pad sq with +0.0 to P = the next power of two >= H. "Fold halves": while L > 1, sq[i] = sq[i] + sq[i + L/2]
   for i < L/2, then L = L/2. total = sq[0]. (Padding further with zeros gives the same bits: squares are never -0
   and v + (+0) == v.)
3. var = total / float(H) (IEEE fp32 division); r = 1 / sqrt(var + fp32(eps)) with IEEE square root and division
   (not rsqrt, which is approximate on CUDA).
4. y = round_to_dtype(xf * r); out = round_to_dtype(fp32(w) * fp32(y)) (HF's `weight * hidden.to(input_dtype)`;
   the product of two bf16/fp16 values is exact in fp32). A NaN output is written as the canonical NaN of the dtype
   (bf16 0x7FC0, fp16 0x7E00), whatever NaN the hardware produced.

`rms_norm_reference` is that order in elementwise torch ops (`a[..., :L//2] + a[..., L//2:]`), invariant by
construction on any device; in it, divisors and eps are same-device tensors, never CPU scalars (CUDA divides by a
CPU scalar as a multiplication by its reciprocal), and the square root goes through float64 (`sqrt_rn`: torch's
CPU float32 sqrt is not correctly rounded). On CUDA `rms_norm_invariant_impl` runs the kernel (one CTA per
row, thread count a function of H only, the same tree), which is bitwise equal to the reference. The result differs
from HF's by an ulp or two in rare elements (another summation order, 1/sqrt instead of rsqrt).

`install_invariant_rms_norms(model)` replaces the modules of an explicit allowlist of classes whose forward is
exactly the Llama formula (checked against transformers 5.x; Gemma's `(1 + weight)` and Olmo2's
`(weight * x).to(dtype)` forms are not, and are left alone). The replacement shares the `weight` Parameter and has the
same state_dict keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _lib
from .checks import ACTIVATION_DTYPES, require_dim, require_dtype, require_same_device, require_shape, require_tensor
from .module_tree import set_module
from .ops import ABI_DTYPE_CODE

MAX_HIDDEN = 65536  # the CUDA kernel's limit (64 values per thread, 1024 threads); enforced on every device

# Classes whose forward is exactly `weight * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(input_dtype)` with the epsilon in
# `variance_epsilon` (tests/test_invariant_norm.py checks each one's source against LlamaRMSNorm's).
LLAMA_RMS_NORM_CLASSES = (
    "LlamaRMSNorm",
    "MistralRMSNorm",
    "MixtralRMSNorm",
    "Qwen2RMSNorm",
    "Qwen2MoeRMSNorm",
    "Qwen3RMSNorm",
    "Qwen3MoeRMSNorm",
    "DeepseekV3RMSNorm",
    "Phi3RMSNorm",
    "GraniteRMSNorm",
)

_CANONICAL_NAN_BITS = {torch.bfloat16: 0x7FC0, torch.float16: 0x7E00}


def _canonical_nan(out: torch.Tensor) -> torch.Tensor:
    nan = torch.full((), _CANONICAL_NAN_BITS[out.dtype], dtype=torch.int16, device=out.device).view(out.dtype)
    return torch.where(torch.isnan(out), nan, out)


def sqrt_rn(t: torch.Tensor) -> torch.Tensor:
    """Correctly rounded fp32 square root on every device. torch's CPU float32 sqrt is not (one ulp off for 17% of
    random inputs with torch 2.13 on an AVX512 CPU, 0.6% with torch 2.11 on another), so the root is taken in
    float64 and rounded to fp32. That is the correctly rounded fp32 root: an fp32 root is at least 2^-51 (relative)
    away from any fp32 rounding midpoint, and torch's float64 sqrt errs by at most about an ulp (2^-52)."""
    return torch.sqrt(t.double()).float()


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The fixed-order RMSNorm of the module docstring over the last dimension (leading dims are rows)."""
    h = x.shape[-1]
    xf = x.reshape(-1, h).float()
    sq = xf * xf
    p = 1 << (h - 1).bit_length() if h > 1 else 1
    if p > h:
        sq = torch.nn.functional.pad(sq, (0, p - h))
    while sq.shape[-1] > 1:
        half = sq.shape[-1] // 2
        sq = sq[:, :half] + sq[:, half:]
    var = torch.div(sq, torch.full_like(sq, float(h)))
    denom = sqrt_rn(var + torch.full_like(var, float(eps)))
    r = torch.div(torch.ones_like(denom), denom)
    y = (xf * r).to(x.dtype)
    out = (weight.float() * y.float()).to(x.dtype)
    return _canonical_nan(out).reshape(x.shape)


def check_rms_norm_args(fn: str, x: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    require_tensor(fn, "x", x)
    require_tensor(fn, "weight", weight)
    require_dtype(fn, "x", x, ACTIVATION_DTYPES)
    if x.dim() < 1:
        raise ValueError(f"{fn}: x must have at least 1 dimension (the hidden size last), got a 0-d tensor")
    require_dim(fn, "weight", weight, 1)
    h = x.shape[-1]
    require_shape(fn, "weight", weight, (h,))
    if weight.dtype != x.dtype:
        raise TypeError(
            f"{fn}: weight dtype {str(weight.dtype).replace('torch.', '')} must equal x dtype "
            f"{str(x.dtype).replace('torch.', '')} (the Llama formula multiplies in the input dtype); cast the "
            f"model, e.g. model.to({x.dtype})"
        )
    if not 1 <= h <= MAX_HIDDEN:
        raise ValueError(f"{fn}: x.shape[-1] (hidden size) must be in [1, {MAX_HIDDEN}], got {h}")
    if isinstance(eps, bool) or not isinstance(eps, (float, int)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{fn}: eps must be a finite float >= 0, got {eps!r}")
    require_same_device(fn, "x", x, weight=weight)


def _launch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    lib = _lib.require()
    if not hasattr(lib, "nvfp4_rms_norm"):
        raise _lib.KernelLibraryError(
            f"{_lib.library_path()} has no nvfp4_rms_norm (built before it existed); reinstall nvfp4"
        )
    h = x.shape[-1]
    x2 = x.reshape(-1, h)
    rows = x2.shape[0]
    out = torch.empty((rows, h), dtype=x.dtype, device=x.device)
    if rows == 0:
        return out.reshape(x.shape)
    stride = x2.stride(0) if rows > 1 else h
    if x2.stride(1) != 1 or stride < h:  # strided along H, or broadcast/overlapping rows
        x2, stride = x2.contiguous(), h
    w = weight.contiguous()
    args = (x2.data_ptr(), ABI_DTYPE_CODE[x.dtype], rows, h, stride, w.data_ptr(), float(eps), out.data_ptr(),
            torch.cuda.current_stream(x.device).cuda_stream)
    if x.device.index is None or x.device.index == torch.cuda.current_device():
        status = lib.nvfp4_rms_norm(*args)
    else:  # the launch goes to the current device: make it x's
        with torch.cuda.device(x.device):
            status = lib.nvfp4_rms_norm(*args)
    _lib.check(status, "nvfp4_rms_norm")
    return out.reshape(x.shape)


def rms_norm_invariant_impl(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Batch-invariant RMSNorm over the last dim: the CUDA kernel on CUDA tensors, rms_norm_reference elsewhere."""
    check_rms_norm_args("nvfp4.rms_norm_invariant", x, weight, eps)
    if x.device.type == "cuda":
        return _launch(x, weight, eps)
    return rms_norm_reference(x, weight, eps)


@torch.library.custom_op("nvfp4::rms_norm_invariant", mutates_args=())
def rms_norm_invariant(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return rms_norm_invariant_impl(x, weight, eps)


@rms_norm_invariant.register_fake
def _(x, weight, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _eps_of(module: nn.Module) -> float:
    for attr in ("variance_epsilon", "eps"):
        value = getattr(module, attr, None)
        if isinstance(value, (float, int)) and not isinstance(value, bool):
            return float(value)
    raise ValueError(f"InvariantRMSNorm: {type(module).__name__} has no float `variance_epsilon` or `eps` attribute")


class InvariantRMSNorm(nn.Module):
    """Drop-in for an HF Llama-formula RMSNorm whose output rows are bitwise independent of the batch."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        weight = getattr(norm, "weight", None)
        if not isinstance(weight, nn.Parameter):
            raise TypeError(f"InvariantRMSNorm: {type(norm).__name__} has no `weight` Parameter")
        if weight.dim() != 1:
            raise ValueError(f"InvariantRMSNorm: weight must be 1-D, got shape {tuple(weight.shape)}")
        self.weight = weight  # shared Parameter, same state_dict key
        self.variance_epsilon = _eps_of(norm)
        self.source_class = type(norm).__name__

    @property
    def eps(self) -> float:
        return self.variance_epsilon

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return rms_norm_invariant(hidden_states, self.weight, self.variance_epsilon)
        return rms_norm_invariant_impl(hidden_states, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}, from={self.source_class}, batch-invariant"


def install_invariant_rms_norms(model: nn.Module) -> list[str]:
    """Replace every module whose class is in LLAMA_RMS_NORM_CLASSES by InvariantRMSNorm; returns the names
    replaced. Other norms (Gemma's `1 + weight`, LayerNorm, ...) are left alone."""
    names = [n for n, m in model.named_modules() if n and type(m).__name__ in LLAMA_RMS_NORM_CLASSES]
    for n in names:
        set_module(model, n, InvariantRMSNorm(model.get_submodule(n)))
    return names
