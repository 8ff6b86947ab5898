"""Weight quantization recipes, each byte-identical to the tool whose checkpoints it reproduces.

Bit-exactness needs the tool's exact operation order and dtypes, not just its formula (docs/recipes.md); every
line below mirrors one step of the tool's own computation, and tests/test_recipes_fixtures.py checks the bytes
against checkpoints written by the real tools (tests/fixtures/, made by tests/fixtures/make_fixtures.py).

Both recipes take the weight in the dtype the tool saw (the model dtype, bf16 for the fixtures) and the per-tensor
amax the tool used. For fused shards (q/k/v, gate/up) both tools use one amax for the whole group: the max of the
shards' amaxes; pass that.
"""

from __future__ import annotations

import torch

from .format import BLOCK_SIZE, E2M1_MAX, E4M3_MAX, E4M3_MIN_SUBNORMAL, GLOBAL_SCALE_RANGE, e2m1_codes, pack_e2m1, to_e4m3
from .tensor import NvFp4Tensor

RECIPES = ("modelopt", "compressed-tensors")

# compressed-tensors replaces a zero block scale (after the e4m3 cast) by the "eps" of the scale dtype, which it
# defines as 0.125 for float8_e4m3fn (byte 0x20).
CT_ZERO_BLOCK_SCALE = 0.125


def modelopt_block_quantize(
    x: torch.Tensor, global_decode: torch.Tensor, *, signed_zero: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """ModelOpt's per-block step for x [rows, K] given the fp32 decode global scale (0-d or [rows, 1]).

    Returns (codes uint8 [rows, K], block scales float8_e4m3fn [rows, K/16]). Also the activation recipe: the CUDA
    quantizer (cpp/kernels/quantize_activations.cu) performs these operations in this order, in fp32, with IEEE
    division, so its bytes equal these; that kernel keeps the sign bit of a -0.0 input (signed_zero=True, the
    default). ModelOpt's weight export decides the sign with `x < 0`, so a -0.0 weight gets code 0 there:
    quantize_modelopt passes signed_zero=False.
    """
    rows, cols = x.shape
    # The block amax is taken on the input dtype and then widened (exact either way: max of bf16 values is a bf16
    # value). Everything after this is fp32, as in NVFP4QTensor.get_weights_scaling_factor.
    blocks = x.float().reshape(rows, cols // BLOCK_SIZE, BLOCK_SIZE)
    s2 = global_decode.float()
    if s2.dim() != 0:
        s2 = s2.reshape(-1, 1)
    block_amax = blocks.abs().amax(dim=-1)  # NaN propagates: a NaN block gets a NaN scale
    # ModelOpt: per_block_amax / (E2M1_MAX * weights_scaling_factor_2). The product 6*s2 is rounded to fp32
    # first and then divides; this is not the same as (amax_blk / 6) / s2 or amax_blk * (448 / amax).
    block_scale = block_amax / (E2M1_MAX * s2)
    # A zero block would give scale 0 and 0/0 elements: ModelOpt sets it to 1.0 (byte 0x38) before the cast.
    block_scale = torch.where(block_scale == 0, torch.ones_like(block_scale), block_scale)
    # Clamp to [2^-9, 448] before the cast: tiny blocks keep the smallest subnormal instead of rounding to 0.
    block_scale = to_e4m3(block_scale.clamp(E4M3_MIN_SUBNORMAL, E4M3_MAX))
    # The element divisor is the decoded e4m3 scale times s2, rounded to fp32 once, then one IEEE division per
    # element (the bf16 weight is promoted to fp32 by the division).
    divisor = block_scale.float() * s2
    codes = e2m1_codes(blocks / divisor.unsqueeze(-1), signed_zero=signed_zero)
    return codes.reshape(rows, cols), block_scale


def quantize_modelopt(x: torch.Tensor, amax: torch.Tensor) -> NvFp4Tensor:
    """NVIDIA ModelOpt NVFP4 weight export (`weight`, `weight_scale`, `weight_scale_2`).

    x: the weight in the model dtype; amax: the weight quantizer's per-tensor amax (for fused shards, the max over
    the group, as modelopt.torch.export.quant_utils.preprocess_linear_fusion sets it).
    """
    # weight_scale_2 = amax.float() / (E2M1_MAX * 448): the constant 2688 is formed in Python (exact), the
    # division is one fp32 IEEE division.
    global_decode = amax.float().reshape(()) / GLOBAL_SCALE_RANGE
    codes, block_scale = modelopt_block_quantize(x, global_decode, signed_zero=False)
    return NvFp4Tensor(pack_e2m1(codes), block_scale, global_decode)


def compressed_tensors_encode_scale(amax: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The fp32 `weight_global_scale` compressed-tensors stores for this amax, for a model in `dtype`.

    compressed_tensors.quantization.utils.generate_gparam works in the dtype of the observer's statistics, which is
    the weight dtype: amax is clamped to the dtype's smallest normal, then `448 * 6 / amax` -- a Python scalar over a
    tensor, which torch evaluates as `amax.reciprocal() * 2688`, two roundings in the model dtype -- NaN/inf become
    1.0, and only then is the result widened to fp32. Returned shape [1].
    """
    a = amax.to(dtype).reshape(1)
    a = a.clamp(min=torch.finfo(dtype).tiny)
    g = a.reciprocal() * GLOBAL_SCALE_RANGE  # same kernels as torch's `2688.0 / a` (Tensor.__rtruediv__)
    g = torch.nan_to_num(g, nan=1.0, posinf=1.0, neginf=1.0)
    return g.to(torch.float32)


def decode_scale_for_encode(encode: torch.Tensor) -> torch.Tensor:
    """The 0-d fp32 decode scale for an fp32 encode scale: fp32(1 / encode).

    fp32(1/fp32(1/G)) == G fails for about 1 in 5 bf16-valued G, and for exactly those no other fp32 d gives
    fp32(1/d) == G either (measured over all bf16 values in [2^-60, 2^60] by tests/test_recipes_fixtures.py), so the
    nearest reciprocal is the best a decode-only container can do; there NvFp4Tensor.encode_global_scale is one
    ulp off the stored value (docs/recipes.md).
    """
    return 1.0 / encode.float().reshape(())


def ct_block_quantize(x: torch.Tensor, encode: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """compressed-tensors' per-block step for x [rows, K] (model dtype) and its fp32 encode global scale [1].

    Returns (codes uint8 [rows, K], block scales float8_e4m3fn [rows, K/16]).
    """
    rows, cols = x.shape
    dtype = x.dtype
    blocks = x.reshape(rows, cols // BLOCK_SIZE, BLOCK_SIZE)
    g = encode.float().reshape(1)
    # Observer (llm-compressor memoryless_minmax) -> calculate_qparams: block min/max in the model dtype, then
    # max(|min|, |max|) = the block amax, still in the model dtype.
    block_amax = blocks.abs().amax(dim=-1)
    # scales = max_val_pos / (bit_range.to(dtype) / 2): the divisor 6 is a 0-d tensor of the model dtype, so the
    # division rounds to the model dtype (bf16) -- before any global scale is applied.
    six = torch.tensor(2 * E2M1_MAX, dtype=torch.float32).to(dtype) / 2
    local = block_amax / six
    # global_scale (fp32 [1]) * local (model dtype) promotes to fp32: one fp32 rounding of the product.
    scale = g * local
    # round_to_quantized_type_dtype: clamp to +-448 then cast to e4m3 (RNE), read back as fp32. No lower clamp:
    # tiny blocks round to 0 here ...
    scale = to_e4m3(scale).float()
    # ... and every 0 becomes the e4m3 "eps" 0.125 (zero blocks and tiny blocks alike).
    scale = torch.where(scale == 0, torch.full_like(scale, CT_ZERO_BLOCK_SCALE), scale)
    # The scale parameter lives in the model dtype (e4m3 values are exact there). Compression divides
    # scale / global_scale in fp32 (model dtype / fp32 promotes), then x (model dtype) by that, again fp32.
    divisor = scale.to(dtype).unsqueeze(-1) / g
    q = blocks / divisor
    # Clamp to [-6, 6] then round (cast_to_fp4): a -0.0 weight stays -0.0 but torch.sign(-0.0) is 0, so its
    # rounded value is +0.0 (code 0); a negative value that rounds to zero gives -0.0 (code 8).
    codes = e2m1_codes(q.float(), signed_zero=False)
    return codes.reshape(rows, cols), to_e4m3(scale)


def quantize_compressed_tensors(x: torch.Tensor, amax: torch.Tensor) -> NvFp4Tensor:
    """compressed-tensors / llm-compressor `nvfp4-pack-quantized` export (NVFP4 and NVFP4A16 weights).

    x: the weight in the model dtype (the tool computes the block and global scales in that dtype); amax: the
    per-tensor amax of the weight, or for fused shards the max over the group (llm-compressor's fused observers
    compute one global scale from the group's statistics).

    global_scale is the decode convention; the stored fp32 `weight_global_scale` is
    compressed_tensors_encode_scale(amax, x.dtype); NvFp4Tensor.encode_global_scale reproduces it exactly whenever
    an fp32 reciprocal can (decode_scale_for_encode), which holds for every Linear of the fixtures.
    """
    encode = compressed_tensors_encode_scale(amax, x.dtype)
    codes, block_scale = ct_block_quantize(x, encode)
    return NvFp4Tensor(pack_e2m1(codes), block_scale, decode_scale_for_encode(encode), encode_scale=encode.float().reshape(1))


def quantize_with_recipe(x: torch.Tensor, amax: torch.Tensor, recipe: str) -> NvFp4Tensor:
    if recipe == "modelopt":
        return quantize_modelopt(x, amax)
    if recipe == "compressed-tensors":
        return quantize_compressed_tensors(x, amax)
    raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
