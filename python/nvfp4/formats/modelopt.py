"""NVIDIA ModelOpt NVFP4 checkpoints: detection, reading, writing, and the weight recipe, byte for byte.

On disk: `<layer>.weight` u8 [N, K/2], `.weight_scale` e4m3 [N, K/16], `.weight_scale_2` f32 0-d (decode
convention: amax / 2688), `.input_scale` f32 0-d (quant_algo NVFP4 only); `hf_quant_config.json` plus
`quantization_config` (quant_method "modelopt") in config.json; quant_algo "NVFP4" (static input scales ->
activation="static") or "W4A16_NVFP4" (activation="none"). This is also the layer's state_dict form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..format import BLOCK_SIZE, E2M1_MAX, E4M3_MAX, E4M3_MIN_SUBNORMAL, GLOBAL_SCALE_RANGE, e2m1_codes, pack_e2m1, to_e4m3
from ..tensor import NvFp4Tensor
from .base import QuantSpec, UnsupportedCheckpointError, config_object, divide_by, global_scalar, pattern_list
from .files import read_json

if TYPE_CHECKING:  # pragma: no cover
    from ..linear import NvFp4Linear

NAME = "modelopt"
LAYER_KEYS = ("weight", "weight_scale", "weight_scale_2", "input_scale", "bias")
# Tensor suffixes only this format writes (formats.check_tensor_format).
SIGNATURE_KEYS = ("weight_scale_2", "input_scale")


# --- recipe ----------------------------------------------------------------------------------------------------

def block_quantize(x: torch.Tensor, global_decode: torch.Tensor, *, signed_zero: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """ModelOpt's per-block step for x [rows, K] given the fp32 decode global scale (0-d or [rows, 1]).

    Returns (codes uint8 [rows, K], block scales float8_e4m3fn [rows, K/16]). Also the activation recipe: the CUDA
    quantizer (cpp/kernels/quantize_activations.cu) performs these operations in this order, in fp32, with IEEE
    division, so its bytes equal these; that kernel keeps the sign bit of a -0.0 input (signed_zero=True, the
    default). ModelOpt's weight export decides the sign with `x < 0`, so a -0.0 weight gets code 0 there:
    quantize_weight passes signed_zero=False.
    """
    rows, cols = x.shape
    # The block amax is taken on the input dtype and then widened (exact either way: max of bf16 values is a bf16
    # value). Everything after this is fp32, as in NVFP4QTensor.get_weights_scaling_factor.
    blocks = x.float().reshape(rows, cols // BLOCK_SIZE, BLOCK_SIZE)
    s2 = global_decode.float().to(x.device)
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


def quantize_weight(x: torch.Tensor, amax: torch.Tensor) -> NvFp4Tensor:
    """ModelOpt's NVFP4 weight export (`weight`, `weight_scale`, `weight_scale_2`).

    x: the weight in the model dtype; amax: the weight quantizer's per-tensor amax (for fused shards, the max over
    the group, as modelopt.torch.export.quant_utils.preprocess_linear_fusion sets it).
    """
    # weight_scale_2 = amax.float() / (E2M1_MAX * 448): the constant 2688 is formed in Python (exact), the
    # division is one fp32 IEEE division.
    global_decode = divide_by(amax.float().reshape(()), GLOBAL_SCALE_RANGE)
    codes, block_scale = block_quantize(x, global_decode, signed_zero=False)
    return NvFp4Tensor(pack_e2m1(codes), block_scale, global_decode)


def input_scale(amax: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, float]]:
    """The static input scale ModelOpt stores for a calibrated activation amax: amax.float() / (6 * 448), one fp32
    division; no extra values to remember."""
    return divide_by(amax.float().reshape(()), GLOBAL_SCALE_RANGE), {}


def remember(layer: "NvFp4Linear", extras: dict[str, float]) -> None:
    """ModelOpt stores nothing beyond the layer state."""


# --- reading ---------------------------------------------------------------------------------------------------

def _spec(algo: str | None, ignore: list[str], source: str) -> QuantSpec:
    if algo == "NVFP4":
        return QuantSpec(NAME, "static", ignore, description=f"ModelOpt NVFP4 ({source})")
    if algo == "W4A16_NVFP4":
        return QuantSpec(NAME, "none", ignore, description=f"ModelOpt W4A16_NVFP4 ({source})")
    raise UnsupportedCheckpointError(
        f"{source}: ModelOpt quant_algo {algo!r} is not supported (supported: NVFP4, W4A16_NVFP4). "
        "MXFP4, FP8, NVFP4_AWQ/SVD (pre_quant_scale) and MIXED_PRECISION checkpoints are not loaded by nvfp4."
    )


def _from_hf_quant_config(file: Path) -> QuantSpec:
    hq = read_json(file, "nvfp4.from_pretrained")
    q = config_object(hq.get("quantization", hq), f"{file}: quantization")
    if q.get("group_size", 16) != 16:
        raise UnsupportedCheckpointError(f"{file}: ModelOpt group_size {q.get('group_size')!r}: NVFP4 needs 16")
    if q.get("kv_cache_quant_algo"):
        raise UnsupportedCheckpointError(f"{file}: ModelOpt kv_cache_quant_algo {q['kv_cache_quant_algo']!r} is not supported")
    return _spec(q.get("quant_algo"), pattern_list(q.get("exclude_modules"), f"{file}: quantization.exclude_modules"),
                 str(file))


def _from_config_json(qc: dict[str, Any], source: str) -> QuantSpec:
    if qc.get("kv_cache_scheme") or qc.get("kv_cache_quant_algo"):
        raise UnsupportedCheckpointError(f"{source}: ModelOpt kv-cache quantization is not supported")
    key = "ignore" if "ignore" in qc else "exclude_modules"
    return _spec(qc.get("quant_algo"), pattern_list(qc.get(key), f"{source}.{key}"), source)


def detect(path: Path, config: dict[str, Any]) -> QuantSpec | None:
    """This format's reading of the folder's config (None: not a ModelOpt checkpoint). hf_quant_config.json is
    ModelOpt's own file; when config.json also has a quantization_config, the two must describe the same
    quantization (format, activations, excluded modules), or the checkpoint is refused as ambiguous."""
    source = f"{path / 'config.json'}: quantization_config"
    qc = config.get("quantization_config")
    in_config = qc is not None and qc.get("quant_method") == "modelopt"
    hf_file = path / "hf_quant_config.json"
    if not hf_file.is_file():
        return _from_config_json(qc, source) if in_config else None
    spec = _from_hf_quant_config(hf_file)
    if qc is None:
        return spec
    # config.json's copy is compared on what it states (some exports omit the algorithm or the exclude list there).
    stated = dict(qc, quant_algo=qc.get("quant_algo", "NVFP4" if spec.activation == "static" else "W4A16_NVFP4"))
    other = _from_config_json(stated, source) if in_config else None
    lists_ignore = "ignore" in qc or "exclude_modules" in qc
    if other is None or other.activation != spec.activation or (lists_ignore and sorted(other.ignore) != sorted(spec.ignore)):
        said = (f"quant_method {qc.get('quant_method')!r}" if other is None
                else f"{other.description.split(' (')[0]}, ignore={other.ignore}")
        raise UnsupportedCheckpointError(
            f"conflicting quantization configs: {hf_file} says {spec.description.split(' (')[0]}, "
            f"exclude_modules={spec.ignore}; {source} says {said}. Remove the one that does not describe the tensors."
        )
    return spec


def is_quantized_on_disk(name: str, tensors: dict[str, torch.Tensor]) -> bool:
    w = tensors.get(f"{name}.weight")
    return (w is not None and w.dtype == torch.uint8) or f"{name}.weight_scale" in tensors


def read_layer(name: str, t: dict[str, torch.Tensor], activation: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One layer's tensors (suffix -> tensor) -> (NvFp4Linear state_dict, values to remember)."""
    fn = "nvfp4.from_pretrained"
    if "weight" not in t:
        raise ValueError(f"{fn}: {name}.weight is missing (a ModelOpt NVFP4 layer stores its packed weight as "
                         f"`weight`)")
    if t["weight"].dtype != torch.uint8:
        raise TypeError(f"{fn}: {name}.weight must be packed uint8 for an NVFP4 layer, got {str(t['weight'].dtype).replace('torch.', '')}")
    for req in ("weight_scale", "weight_scale_2"):
        if req not in t:
            raise ValueError(f"{fn}: {name}.{req} is missing")
    sd = {"weight": t["weight"], "weight_scale": t["weight_scale"],
          "weight_scale_2": global_scalar(fn, f"{name}.weight_scale_2", t["weight_scale_2"])}
    if activation == "static":
        if "input_scale" not in t:
            raise ValueError(f"{fn}: {name}.input_scale is missing (quant_algo NVFP4 has static input scales)")
        sd["input_scale"] = global_scalar(fn, f"{name}.input_scale", t["input_scale"])
    elif "input_scale" in t:
        raise ValueError(f"{fn}: {name}.input_scale present in a W4A16 checkpoint")
    if "bias" in t:
        sd["bias"] = t["bias"]
    return sd, {}


# --- writing ---------------------------------------------------------------------------------------------------

def write_layer(layer: "NvFp4Linear", static: bool) -> dict[str, torch.Tensor]:
    """suffix -> tensor of one layer, in ModelOpt's names and dtypes."""
    sd = layer.state_dict()
    out = {"weight": sd["weight"], "weight_scale": sd["weight_scale"],
           "weight_scale_2": sd["weight_scale_2"].float().reshape(())}
    if static:
        out["input_scale"] = sd["input_scale"].float().reshape(())
    if "bias" in sd:
        out["bias"] = sd["bias"]
    return out


def write_config(model: nn.Module, out: Path, static: bool, unquantized: list[str]) -> dict[str, Any]:
    """Writes hf_quant_config.json into `out` and returns config.json's quantization_config."""
    from .. import __version__

    algo = "NVFP4" if static else "W4A16_NVFP4"
    group = {"weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16}, "targets": ["Linear"]}
    if static:
        group = {"input_activations": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16}, **group}
    # sorted, as ModelOpt writes exclude_modules (export/quant_utils.process_layer_quant_config)
    exclude = sorted(unquantized + [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)])
    producer = {"name": "nvfp4", "version": __version__}
    qc = {"config_groups": {"group_0": group}, "ignore": exclude, "quant_algo": algo, "producer": producer,
          "quant_method": "modelopt"}
    hf_quant = {"producer": producer, "quantization": {"quant_algo": algo, "kv_cache_quant_algo": None,
                                                       "group_size": 16, "exclude_modules": exclude}}
    (out / "hf_quant_config.json").write_text(json.dumps(hf_quant, indent=4))
    return qc
