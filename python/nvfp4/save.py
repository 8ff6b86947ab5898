"""save_pretrained: write a model with NvFp4Linear layers as a ModelOpt or compressed-tensors checkpoint, with the
tensor names, dtypes, shapes and config keys those tools write (the format modules in formats/ own them; tests
compare them against tests/fixtures/).

Per-token activation scales have no representation in either format: such a model is refused (quantize with
calibration batches, or weight_only=True).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from . import formats
from .invariant_ops import InvariantLinear
from .linear import NvFp4Linear
from .moe_checkpoint import fused_experts_modules, quantized_experts, write_experts
from .moe_routing import is_router

FORMATS = formats.NAMES


def _unquantized_linears(model: nn.Module) -> list[str]:
    # MoE routers are Linears to the tools (they list them as unquantized) but not nn.Linear in transformers 5
    return [n for n, m in model.named_modules()
            if (isinstance(m, (nn.Linear, InvariantLinear)) and not isinstance(m, NvFp4Linear)) or is_router(m)]


def _parse_size(size: int | str) -> int:
    """max_shard_size: a positive number of bytes, as an int or a string such as "5GB", "200MB", "1000"."""
    fn = "nvfp4.save_pretrained"
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"{fn}: max_shard_size must be an int (bytes) or a string such as '5GB', got "
                        f"{type(size).__name__}")
    value: float | None = float(size) if isinstance(size, int) else None
    if value is None:
        text = size.strip().upper()
        mult = next((m for unit, m in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)) if text.endswith(unit)), 1)
        number = text[:-2] if mult != 1 else text
        try:
            value = float(number) * mult
        except ValueError:
            raise ValueError(f"{fn}: max_shard_size {size!r} is not a size (an int, or a number with KB, MB or GB)") from None
    if not value >= 1:
        raise ValueError(f"{fn}: max_shard_size must be at least 1 byte, got {size!r}")
    return int(value)


def save_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "modelopt",
    *,
    max_shard_size: int | str = "5GB",
) -> None:
    """Write `model` (with NvFp4Linear layers) to folder `path` in the given checkpoint format."""
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"nvfp4.save_pretrained: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"nvfp4.save_pretrained: path must be a str or os.PathLike, got {type(path).__name__}")
    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(f"nvfp4.save_pretrained: {path} is a file; pass a folder to write the checkpoint into")
    fmt = formats.get(format, "nvfp4.save_pretrained: format")
    max_bytes = _parse_size(max_shard_size)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, NvFp4Linear)}
    experts = quantized_experts(model)
    if not layers and not experts:
        raise ValueError("nvfp4.save_pretrained: the model has no NvFp4Linear layer")
    bf16_experts = [n for n, _ in fused_experts_modules(model)]
    if bf16_experts:  # their per-expert bf16 layout and ignore entries are not written (docs/models.md)
        raise ValueError(f"nvfp4.save_pretrained: the experts of {bf16_experts[:4]} are not quantized; quantize them "
                         f"too (quantize_model without ignoring them) to save this model")
    modes = {m.activation for m in (*layers.values(), *experts.values())}
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
        tensors.update({f"{name}.{k}": v for k, v in fmt.write_layer(layer, static).items()})
    for name, module in experts.items():
        tensors.update(write_experts(name, module, fmt, static))
    prefixes = tuple(f"{n}." for n in (*layers, *experts))
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
    _write_shards(save_file, tensors, out, max_bytes)

    qc = fmt.write_config(model, out, static, _unquantized_linears(model))
    config = model.config
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
