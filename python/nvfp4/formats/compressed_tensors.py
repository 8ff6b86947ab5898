"""compressed-tensors / llm-compressor `nvfp4-pack-quantized` checkpoints: detection, reading, writing, and the
weight recipe, byte for byte.

On disk: `<layer>.weight_packed` u8 [N, K/2], `.weight_scale` e4m3 [N, K/16], `.weight_global_scale` f32 [1]
(encode convention: 2688 / amax), `.input_global_scale` f32 [1] (NVFP4 W4A4); `quantization_config` with format
"nvfp4-pack-quantized". Weights {num_bits 4, type float, group_size 16, strategy tensor_group}; input activations
either the NVFP4 ones (`dynamic: "local"`: block scales computed at run time against the stored static
`input_global_scale`, which is exactly ModelOpt's static mode -> activation="static") or absent (NVFP4A16 ->
activation="none"). Encode global scales G become the layer's decode scales fp32(1/G) (decode_scale_for_encode);
the exact G is remembered on the layer so that writing reproduces the file bytes (docs/recipes.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..format import BLOCK_SIZE, E2M1_MAX, GLOBAL_SCALE_RANGE, e2m1_codes, pack_e2m1, to_e4m3
from ..tensor import NvFp4Tensor
from .base import QuantSpec, UnsupportedCheckpointError, config_object, dtype_name, global_scalar, optional_object, pattern_list

if TYPE_CHECKING:  # pragma: no cover
    from ..linear import NvFp4Linear

NAME = "compressed-tensors"
LAYER_KEYS = ("weight_packed", "weight_scale", "weight_global_scale", "input_global_scale", "weight_shape", "bias")
# Tensor suffixes only this format writes (formats.check_tensor_format).
SIGNATURE_KEYS = ("weight_packed", "weight_global_scale", "input_global_scale", "weight_shape")
# The compressed-tensors format version whose files we match (tests/fixtures/ct-nvfp4, written by 0.19.0).
FORMAT_VERSION = "0.19.0"

# Attribute (not a buffer: the state_dict stays in ModelOpt form) holding the exact encode values of a layer when
# they are known, {"weight_global_scale": float, "input_global_scale": float}. fp32 values are exact as Python
# floats. write_layer writes them back when they still agree with the layer's decode scales.
ENCODE_ATTR = "nvfp4_ct_encode_scales"


# --- recipe ----------------------------------------------------------------------------------------------------

# compressed-tensors replaces a zero block scale (after the e4m3 cast) by the "eps" of the scale dtype, which it
# defines as 0.125 for float8_e4m3fn (byte 0x20).
CT_ZERO_BLOCK_SCALE = 0.125


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
    g = encode.float().reshape(1).to(x.device)
    # Observer (llm-compressor memoryless_minmax) -> calculate_qparams: block min/max in the model dtype, then
    # max(|min|, |max|) = the block amax, still in the model dtype.
    block_amax = blocks.abs().amax(dim=-1)
    # scales = max_val_pos / (bit_range.to(dtype) / 2): the divisor 6 is a 0-d tensor of the model dtype, so the
    # division rounds to the model dtype (bf16) -- before any global scale is applied.
    six = torch.tensor(2 * E2M1_MAX, dtype=torch.float32, device=x.device).to(dtype) / 2  # exact: 6
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


def quantize_weight(x: torch.Tensor, amax: torch.Tensor) -> NvFp4Tensor:
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


def input_scale(amax: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, float]]:
    """llm-compressor's static input scale for a calibrated activation amax: the encode value computed from the amax
    in the activation dtype, stored as its fp32 reciprocal; the exact encode value is returned to remember."""
    enc = compressed_tensors_encode_scale(amax, dtype)
    return decode_scale_for_encode(enc), {"input_global_scale": float(enc.reshape(()))}


def remember(layer: "NvFp4Linear", extras: dict[str, float]) -> None:
    """Keeps the exact encode values on the layer for write_layer."""
    if extras:
        setattr(layer, ENCODE_ATTR, {**getattr(layer, ENCODE_ATTR, {}), **extras})


# --- reading ---------------------------------------------------------------------------------------------------

def _spec(qc: dict[str, Any], source: str) -> QuantSpec:
    top_format = qc.get("format")
    groups = optional_object(qc.get("config_groups"), f"{source}.config_groups")
    if len(groups) != 1:
        raise UnsupportedCheckpointError(
            f"compressed-tensors checkpoint with {len(groups)} config_groups: only one NVFP4 group is supported"
        )
    if qc.get("sparsity_config") or qc.get("transform_config"):
        raise UnsupportedCheckpointError("compressed-tensors sparsity/transform configs are not supported")
    if qc.get("kv_cache_scheme"):
        raise UnsupportedCheckpointError("compressed-tensors kv_cache_scheme is not supported")
    (name, group), = groups.items()
    group = config_object(group, f"{source}.config_groups.{name}")
    fmt = group.get("format") or top_format
    if fmt != "nvfp4-pack-quantized":
        raise UnsupportedCheckpointError(
            f"compressed-tensors format {fmt!r} is not supported (only 'nvfp4-pack-quantized'; MXFP4, FP8 and int "
            "formats are not loaded by nvfp4)"
        )
    status = qc.get("quantization_status", "compressed")
    if status != "compressed":
        raise UnsupportedCheckpointError(f"compressed-tensors quantization_status {status!r}: expected 'compressed'")
    w = optional_object(group.get("weights"), f"{source}.config_groups.{name}.weights")
    want = {"num_bits": 4, "type": "float", "group_size": 16, "strategy": "tensor_group", "symmetric": True}
    for key, value in want.items():
        if key in w and w[key] != value:
            raise UnsupportedCheckpointError(f"compressed-tensors {name}.weights.{key} = {w[key]!r}; NVFP4 needs {value!r}")
    if w.get("dynamic") not in (False, None):
        raise UnsupportedCheckpointError("compressed-tensors dynamic weights are not supported")
    if group.get("output_activations"):
        raise UnsupportedCheckpointError("compressed-tensors output_activations quantization is not supported")
    a = group.get("input_activations")
    if a is None:
        activation = "none"
    else:
        a = config_object(a, f"{source}.config_groups.{name}.input_activations")
        for key in ("num_bits", "type", "group_size", "strategy"):
            if key in a and a[key] != want[key]:
                raise UnsupportedCheckpointError(
                    f"compressed-tensors {name}.input_activations.{key} = {a[key]!r}; NVFP4 activations need {want[key]!r}"
                )
        if a.get("dynamic") != "local":
            # dynamic=True would mean a batch-wide dynamic global scale: rows would depend on each other.
            raise UnsupportedCheckpointError(
                f"compressed-tensors input_activations.dynamic = {a.get('dynamic')!r}: only 'local' (dynamic block "
                "scales against a static input_global_scale) is supported"
            )
        activation = "static"
    kind = "NVFP4" if activation == "static" else "NVFP4A16"
    targets = pattern_list(group.get("targets"), f"{source}.config_groups.{name}.targets") or ["Linear"]
    return QuantSpec(
        NAME, activation, pattern_list(qc.get("ignore"), f"{source}.ignore"), targets,
        description=f"compressed-tensors nvfp4-pack-quantized ({kind})",
    )


def detect(path: Path, config: dict[str, Any]) -> QuantSpec | None:
    """This format's reading of the folder's config.json (None: not a compressed-tensors checkpoint)."""
    qc = config.get("quantization_config")
    if qc is None or qc.get("quant_method") != NAME:
        return None
    return _spec(qc, f"{path / 'config.json'}: quantization_config")


def is_quantized_on_disk(name: str, tensors: dict[str, torch.Tensor]) -> bool:
    return f"{name}.weight_packed" in tensors


def read_layer(name: str, t: dict[str, torch.Tensor], activation: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    fn = "nvfp4.from_pretrained"
    for req in ("weight_packed", "weight_scale", "weight_global_scale"):
        if req not in t:
            raise ValueError(f"{fn}: {name}.{req} is missing")
    packed = t["weight_packed"]
    if packed.dtype != torch.uint8:
        raise TypeError(f"{fn}: {name}.weight_packed must be uint8, got {dtype_name(packed)}")
    if "weight_shape" in t:  # older compressed-tensors versions store the unpacked shape
        shape = tuple(int(v) for v in t["weight_shape"].reshape(-1).tolist())
        unpacked = (packed.shape[0], packed.shape[1] * 2)
        if shape != unpacked:
            raise ValueError(f"{fn}: {name}.weight_shape must be {unpacked} (the unpacked shape of weight_packed "
                             f"{tuple(packed.shape)}: two e2m1 values per byte), got {shape}")
    enc_w = global_scalar(fn, f"{name}.weight_global_scale", t["weight_global_scale"])
    sd = {"weight": packed, "weight_scale": t["weight_scale"], "weight_scale_2": decode_scale_for_encode(enc_w)}
    encodes = {"weight_global_scale": float(enc_w)}
    if activation == "static":
        if "input_global_scale" not in t:
            raise ValueError(f"{fn}: {name}.input_global_scale is missing (NVFP4 W4A4 has a static input global scale)")
        enc_i = global_scalar(fn, f"{name}.input_global_scale", t["input_global_scale"])
        sd["input_scale"] = decode_scale_for_encode(enc_i)
        encodes["input_global_scale"] = float(enc_i)
    elif "input_global_scale" in t:
        raise ValueError(f"{fn}: {name}.input_global_scale present in an NVFP4A16 checkpoint")
    if "bias" in t:
        sd["bias"] = t["bias"]
    return sd, encodes


# --- writing ---------------------------------------------------------------------------------------------------

def _encode(layer: NvFp4Linear, key: str, decode: torch.Tensor) -> torch.Tensor:
    known = getattr(layer, ENCODE_ATTR, {}).get(key)
    if known is not None:
        enc = torch.tensor([known], dtype=torch.float32)
        if torch.equal(decode_scale_for_encode(enc), decode.detach().float().cpu().reshape(())):
            return enc
    return (1.0 / decode.detach().float().cpu()).reshape(1)


def _ct_quant_args(activation: bool) -> dict[str, Any]:
    base = {
        "actorder": None, "block_structure": None, "group_size": 16, "num_bits": 4, "observer_kwargs": {},
        "scale_dtype": "torch.float8_e4m3fn", "strategy": "tensor_group", "symmetric": True, "type": "float",
        "zp_dtype": None,
    }
    if activation:
        return {**base, "dynamic": "local", "observer": "static_minmax"}
    return {**base, "dynamic": False, "observer": "memoryless_minmax"}


def write_layer(layer: "NvFp4Linear", static: bool) -> dict[str, torch.Tensor]:
    """suffix -> tensor of one layer, in compressed-tensors' names and dtypes."""
    sd = layer.state_dict()
    out = {"weight_packed": sd["weight"], "weight_scale": sd["weight_scale"],
           "weight_global_scale": _encode(layer, "weight_global_scale", sd["weight_scale_2"])}
    if static:
        out["input_global_scale"] = _encode(layer, "input_global_scale", sd["input_scale"])
    if "bias" in sd:
        out["bias"] = sd["bias"]
    return out


def write_config(model: nn.Module, out: Path, static: bool, unquantized: list[str]) -> dict[str, Any]:
    """config.json's quantization_config (this format writes no other file)."""
    return {
        "config_groups": {"group_0": {
            "format": "nvfp4-pack-quantized",
            "input_activations": _ct_quant_args(True) if static else None,
            "output_activations": None,
            "targets": ["Linear"],
            "weights": _ct_quant_args(False),
        }},
        "format": "nvfp4-pack-quantized", "global_compression_ratio": None, "ignore": unquantized,
        "kv_cache_scheme": None, "quant_method": NAME, "quantization_status": "compressed",
        "sparsity_config": {}, "transform_config": {}, "version": FORMAT_VERSION,
    }
