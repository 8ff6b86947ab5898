"""save_pretrained: write a model with NvFp4Linear layers as a ModelOpt or compressed-tensors checkpoint, with the
tensor names, dtypes, shapes and config keys those tools write (compared against tests/fixtures/):

- "modelopt": `<layer>.weight` u8 [N,K/2], `.weight_scale` e4m3 [N,K/16], `.weight_scale_2` f32 0-d (decode),
  `.input_scale` f32 0-d (NVFP4 only); `hf_quant_config.json` plus `quantization_config` (quant_method "modelopt")
  in config.json; quant_algo "NVFP4" or "W4A16_NVFP4".
- "compressed-tensors": `<layer>.weight_packed` u8, `.weight_scale` e4m3, `.weight_global_scale` f32 [1] (encode),
  `.input_global_scale` f32 [1]; `quantization_config` with format "nvfp4-pack-quantized" (NVFP4 or NVFP4A16).
  Encode scales are the exact values the layer was loaded/quantized with when known, else fp32(1/decode).

Per-token activation scales have no representation in either format: such a model is refused (quantize with
calibration batches, or weight_only=True).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .convert import CT_ENCODE_ATTR
from .invariant_ops import InvariantLinear
from .linear import NvFp4Linear
from .recipes import decode_scale_for_encode

FORMATS = ("modelopt", "compressed-tensors")
# The compressed-tensors format version whose files we match (tests/fixtures/ct-nvfp4, written by 0.19.0).
CT_FORMAT_VERSION = "0.19.0"


def _encode(layer: NvFp4Linear, key: str, decode: torch.Tensor) -> torch.Tensor:
    known = getattr(layer, CT_ENCODE_ATTR, {}).get(key)
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


def _unquantized_linears(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, InvariantLinear)) and not isinstance(m, NvFp4Linear)]


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def save_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "modelopt",
    *,
    max_shard_size: int | str = "5GB",
) -> None:
    """Write `model` (with NvFp4Linear layers) to folder `path` in the given checkpoint format."""
    from safetensors.torch import save_file

    if format not in FORMATS:
        raise ValueError(f"nvfp4.save_pretrained: format must be one of {FORMATS}, got {format!r}")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, NvFp4Linear)}
    if not layers:
        raise ValueError("nvfp4.save_pretrained: the model has no NvFp4Linear layer")
    modes = {m.activation for m in layers.values()}
    if "per-token" in modes:
        raise ValueError(
            "nvfp4.save_pretrained: per-token activation scales cannot be written as ModelOpt or compressed-tensors "
            "(both store one static input scale per layer); quantize with calibration batches or weight_only=True"
        )
    if len(modes) != 1:
        raise ValueError(f"nvfp4.save_pretrained: layers mix activation modes {sorted(modes)}; one mode per checkpoint")
    (mode,) = modes
    static = mode == "static"

    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        p = f"{name}."
        if format == "modelopt":
            tensors[p + "weight"] = layer.weight
            tensors[p + "weight_scale"] = layer.weight_scale
            tensors[p + "weight_scale_2"] = layer.weight_scale_2.float().reshape(())
            if static:
                tensors[p + "input_scale"] = layer.input_scale.float().reshape(())
        else:
            tensors[p + "weight_packed"] = layer.weight
            tensors[p + "weight_scale"] = layer.weight_scale
            tensors[p + "weight_global_scale"] = _encode(layer, "weight_global_scale", layer.weight_scale_2)
            if static:
                tensors[p + "input_global_scale"] = _encode(layer, "input_global_scale", layer.input_scale)
        if layer.bias is not None:
            tensors[p + "bias"] = layer.bias
    prefixes = tuple(f"{n}." for n in layers)
    seen_ptrs: dict[tuple[int, int], str] = {}
    for k, v in model.state_dict().items():
        if k.startswith(prefixes):
            continue
        key = (v.data_ptr(), v.numel())
        if v.numel() and key in seen_ptrs:  # tied weights (lm_head = embed_tokens): write once, as transformers does
            continue
        seen_ptrs[key] = k
        tensors[k] = v
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    _write_shards(save_file, tensors, out, _parse_size(max_shard_size))

    ignore = _unquantized_linears(model)
    config = model.config
    if format == "modelopt":
        algo = "NVFP4" if static else "W4A16_NVFP4"
        group = {"weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16}, "targets": ["Linear"]}
        if static:
            group = {"input_activations": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16}, **group}
        exclude = ignore + [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
        from . import __version__

        producer = {"name": "nvfp4", "version": __version__}
        qc = {"config_groups": {"group_0": group}, "ignore": exclude, "quant_algo": algo, "producer": producer,
              "quant_method": "modelopt"}
        hf_quant = {"producer": producer, "quantization": {"quant_algo": algo, "kv_cache_quant_algo": None,
                                                           "group_size": 16, "exclude_modules": exclude}}
        (out / "hf_quant_config.json").write_text(json.dumps(hf_quant, indent=4))
    else:
        qc = {
            "config_groups": {"group_0": {
                "format": "nvfp4-pack-quantized",
                "input_activations": _ct_quant_args(True) if static else None,
                "output_activations": None,
                "targets": ["Linear"],
                "weights": _ct_quant_args(False),
            }},
            "format": "nvfp4-pack-quantized", "global_compression_ratio": None, "ignore": ignore,
            "kv_cache_scheme": None, "quant_method": "compressed-tensors", "quantization_status": "compressed",
            "sparsity_config": {}, "transform_config": {}, "version": CT_FORMAT_VERSION,
        }
    cfg = config.to_diff_dict() if hasattr(config, "to_diff_dict") else config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["quantization_config"] = qc
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        try:
            gen.save_pretrained(str(out))
        except Exception:  # pragma: no cover - a generation config is optional
            pass


def _write_shards(save_file, tensors: dict[str, torch.Tensor], out: Path, max_bytes: int) -> None:
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(tensors):
        n = tensors[k].numel() * tensors[k].element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = tensors[k]
        size += n
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata=meta)
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
