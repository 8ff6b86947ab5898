"""Weight quantization recipes, each byte-identical to the tool whose checkpoints it reproduces.

Bit-exactness needs the tool's exact operation order, not just its formula (docs/format.md); every line below
mirrors one step of the tool's own computation, and tests/test_recipes_fixtures.py checks the bytes against
checkpoints written by the real tools.
"""

from __future__ import annotations

import torch

from .format import BLOCK_SIZE, E4M3_MAX, E4M3_MIN_SUBNORMAL, GLOBAL_SCALE_RANGE, e2m1_codes, pack_e2m1, to_e4m3
from .tensor import NvFp4Tensor

RECIPES = ("modelopt", "compressed-tensors")


def modelopt_block_quantize(x: torch.Tensor, global_decode: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ModelOpt's per-block step for x [rows, K] given the fp32 decode global scale (0-d or [rows, 1]).

    Returns (codes uint8 [rows, K], block scales float8_e4m3fn [rows, K/16]). Also the activation recipe: the CUDA
    quantizer (cpp/kernels/quantize_activations.cu) performs these operations in this order, in fp32, with IEEE
    division, so its bytes equal these.
    """
    rows, cols = x.shape
    blocks = x.float().reshape(rows, cols // BLOCK_SIZE, BLOCK_SIZE)
    s2 = global_decode.float().reshape(-1, 1)
    block_amax = blocks.abs().amax(dim=-1)  # NaN propagates: a NaN block gets a NaN scale
    block_scale = block_amax / (6.0 * s2)
    block_scale = torch.where(block_scale == 0, torch.ones_like(block_scale), block_scale)
    block_scale = to_e4m3(block_scale.clamp(E4M3_MIN_SUBNORMAL, E4M3_MAX))
    divisor = block_scale.float() * s2
    codes = e2m1_codes(blocks / divisor.unsqueeze(-1))
    return codes.reshape(rows, cols), block_scale


def quantize_modelopt(x: torch.Tensor, amax: torch.Tensor) -> NvFp4Tensor:
    """NVIDIA ModelOpt NVFP4 weight export (`weight`, `weight_scale`, `weight_scale_2`)."""
    global_decode = amax.float() / GLOBAL_SCALE_RANGE
    codes, block_scale = modelopt_block_quantize(x, global_decode)
    return NvFp4Tensor(pack_e2m1(codes), block_scale, global_decode.reshape(()))


def quantize_compressed_tensors(x: torch.Tensor, amax: torch.Tensor) -> NvFp4Tensor:
    """compressed-tensors / llm-compressor `nvfp4-pack-quantized` export."""
    raise NotImplementedError("compressed-tensors recipe: not written yet")


def quantize_with_recipe(x: torch.Tensor, amax: torch.Tensor, recipe: str) -> NvFp4Tensor:
    if recipe == "modelopt":
        return quantize_modelopt(x, amax)
    if recipe == "compressed-tensors":
        return quantize_compressed_tensors(x, amax)
    raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
