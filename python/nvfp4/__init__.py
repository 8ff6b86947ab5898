"""nvfp4: NVFP4 linear layers for PyTorch with a bitwise batch-invariant mode."""

from .backends import NoKernelError
from .format import pack_e2m1, swizzle_scales, unpack_e2m1, unswizzle_scales
from .info import kernel_info
from .linear import NvFp4Linear
from .quantize import quantize
from .tensor import NvFp4Tensor, dequantize
from .convert import quantize_model
from .invariant_norm import InvariantRMSNorm
from .invariant_ops import InvariantLinear
from .formats import UnsupportedCheckpointError
from .loading import from_pretrained
from .save import save_pretrained

__version__ = "0.1.0"

__all__ = [
    "InvariantLinear",
    "InvariantRMSNorm",
    "UnsupportedCheckpointError",
    "from_pretrained",
    "quantize_model",
    "save_pretrained",
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
