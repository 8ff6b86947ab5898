"""nvfp4: NVFP4 linear layers for PyTorch with a bitwise batch-invariant mode."""

from .dispatch import NoKernelError
from .format import pack_e2m1, swizzle_scales, unpack_e2m1, unswizzle_scales
from .info import kernel_info
from .linear import NvFp4Linear
from .quantize import quantize
from .tensor import NvFp4Tensor, dequantize

__version__ = "0.1.0"

__all__ = [
    "NoKernelError",
    "NvFp4Linear",
    "NvFp4Tensor",
    "dequantize",
    "kernel_info",
    "pack_e2m1",
    "quantize",
    "swizzle_scales",
    "unpack_e2m1",
    "unswizzle_scales",
]
