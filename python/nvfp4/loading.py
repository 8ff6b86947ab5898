"""from_pretrained: load an NVFP4 checkpoint into a transformers model whose quantized Linear layers are NvFp4Linear
(state_dict in ModelOpt form).

The format that recognises the folder's config (formats/: ModelOpt NVFP4 / W4A16_NVFP4, compressed-tensors
nvfp4-pack-quantized NVFP4 / NVFP4A16; docs/models.md) reads each layer's tensors. Anything else (MXFP4, FP8, AWQ
pre_quant_scale, mixed precision, missing, extra or mistyped tensors) raises UnsupportedCheckpointError or
ValueError: never a silently wrong model.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import formats
from .formats import UNSUPPORTED_SUFFIXES, QuantSpec, UnsupportedCheckpointError
from .formats.base import dtype_name
from .invariant_mode import install_invariant_modules, no_invariant_modules
from .linear import NvFp4Linear
from .module_tree import MODEL_META_ATTR, matches_any, set_module


def read_quant_spec(path: Path, config: dict[str, Any]) -> QuantSpec:
    """The quantization described by a checkpoint folder's config.json (and hf_quant_config.json)."""
    return formats.detect(path, config)


# --- tensors ---------------------------------------------------------------------------------------------------


def checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map") or {}
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: shards named in model.safetensors.index.json are missing: {missing}")
        return [path / f for f in files]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json (only safetensors is read)")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(path):
        for k, v in load_file(str(f)).items():
            if k in out:
                raise ValueError(f"{path}: tensor {k} appears in more than one shard")
            out[k] = v
    return out


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover
        raise FileNotFoundError(f"{path} is not a folder (and huggingface_hub is not installed to fetch it)") from exc
    return Path(snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))


# --- per-module conversion -------------------------------------------------------------------------------------


def _should_quantize(spec: QuantSpec, name: str, module: nn.Module) -> bool:
    if matches_any(name, spec.ignore, module):
        return False
    return spec.targets is None or matches_any(name, spec.targets, module)


# --- model construction ----------------------------------------------------------------------------------------


def _build_model(path: Path, dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # we do the quantized loading; transformers must not
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    init = getattr(getattr(transformers, "modeling_utils", None), "no_init_weights", None)
    ctx = init() if init is not None else _nullcontext()
    with ctx:
        if cls is not None:
            try:
                model = cls._from_config(config, dtype=dtype)
            except TypeError:  # transformers < 4.56 spells it torch_dtype
                model = cls._from_config(config, torch_dtype=dtype)
        else:
            model = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code).to(dtype)
    return model


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def from_pretrained(
    path: str | os.PathLike,
    *,
    batch_invariant: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    backend: str = "auto",
    trust_remote_code: bool = False,
    tp_group: torch.distributed.ProcessGroup | None = None,
) -> nn.Module:
    """Load an NVFP4 checkpoint (ModelOpt or compressed-tensors, safetensors, sharded or not) as a transformers
    model whose quantized Linears are NvFp4Linear. batch_invariant=True builds the layers in invariant mode and
    installs the invariant replacements around them (invariant_mode.install_invariant_modules).

    tp_group: a torch.distributed process group; every rank of it builds its tensor-parallel part of the model,
    reading only its own tensors, and every rank's forward returns the full logits (nvfp4.parallel,
    docs/parallel.md)."""
    if tp_group is not None:
        from .parallel_loading import from_pretrained_tp

        return from_pretrained_tp(path, tp_group=tp_group, batch_invariant=batch_invariant, device=device, dtype=dtype,
                                  backend=backend, trust_remote_code=trust_remote_code)
    path = _resolve(path)
    config = json.loads((path / "config.json").read_text())
    spec = read_quant_spec(path, config)
    fmt = formats.get(spec.format)
    tensors = read_tensors(path)
    model = _build_model(path, dtype, trust_remote_code)
    device = torch.device(device) if device is not None else torch.device("cpu")

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    consumed: set[str] = set()
    quantized: list[str] = []
    for name, lin in linears:
        want = _should_quantize(spec, name, lin)
        have = fmt.is_quantized_on_disk(name, tensors)
        if want and not have:
            if f"{name}.weight" not in tensors and f"{name}.weight_packed" not in tensors:
                raise ValueError(f"nvfp4.from_pretrained: {name} is missing from the checkpoint (config says it is quantized)")
            w = tensors.get(f"{name}.weight")
            raise TypeError(
                f"nvfp4.from_pretrained: {name} should be NVFP4 per the config ({spec.description}) but the checkpoint "
                f"holds an unquantized weight ({dtype_name(w) if w is not None else '?'})"
            )
        if have and not want:
            raise ValueError(
                f"nvfp4.from_pretrained: {name} holds NVFP4 tensors but the config excludes it from quantization "
                f"(ignore={spec.ignore}); refusing to guess"
            )
        if not want:
            continue
        own = {k: tensors[f"{name}.{k}"] for k in fmt.LAYER_KEYS if f"{name}.{k}" in tensors}
        bad = [s for s in UNSUPPORTED_SUFFIXES if f"{name}.{s}" in tensors]
        if bad:
            raise UnsupportedCheckpointError(f"nvfp4.from_pretrained: {name} has {bad}: AWQ/SVDQuant/zero-point variants are not supported")
        sd, extras = fmt.read_layer(name, own, spec.activation)
        if ("bias" in sd) != (lin.bias is not None):
            raise ValueError(f"nvfp4.from_pretrained: {name}: the model {'has' if lin.bias is not None else 'has no'} bias, the checkpoint {'has' if 'bias' in sd else 'has none'}")
        layer = NvFp4Linear(
            lin.in_features, lin.out_features, lin.bias is not None, batch_invariant=batch_invariant,
            device="cpu", dtype=dtype, activation=spec.activation, backend=backend,
        )
        try:
            layer.load_state_dict(sd, strict=True)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise type(exc)(f"nvfp4.from_pretrained: {name}: {exc}") from exc
        fmt.remember(layer, extras)
        set_module(model, name, layer)
        consumed.update(f"{name}.{k}" for k in own)
        quantized.append(name)

    if not quantized:
        raise ValueError(f"nvfp4.from_pretrained: no Linear of the model is quantized in {path} ({spec.description})")
    rest = {k: v for k, v in tensors.items() if k not in consumed}
    quantized_keys = {k for f in formats.REGISTRY for k in f.LAYER_KEYS} - {"weight", "bias"}
    leftovers = [k for k in rest if k.rsplit(".", 1)[-1] in quantized_keys | set(UNSUPPORTED_SUFFIXES)
                 and not (k.endswith(".weight") or k.endswith(".bias"))]
    if leftovers:
        raise UnsupportedCheckpointError(
            f"nvfp4.from_pretrained: quantized tensors outside any nn.Linear (e.g. fused MoE experts) are not supported: "
            f"{leftovers[:6]}"
        )
    for k, v in rest.items():
        if v.dtype in (torch.uint8, torch.float8_e4m3fn, torch.int8):
            raise UnsupportedCheckpointError(f"nvfp4.from_pretrained: {k} is {dtype_name(v)} but belongs to no quantized Linear")
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if unexpected:
        raise ValueError(f"nvfp4.from_pretrained: tensors the model does not have: {unexpected[:8]}")
    tied = set()
    if getattr(model.config, "tie_word_embeddings", False):
        tied = {k for k in missing if k.endswith("lm_head.weight")}
    done = tuple(f"{q}." for q in quantized)
    missing = [k for k in missing if k not in tied and not k.startswith(done)]
    if missing:
        raise ValueError(f"nvfp4.from_pretrained: tensors missing from the checkpoint: {missing[:8]}")
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.dtype != dtype and not isinstance(model.get_submodule(name.rpartition(".")[0]), NvFp4Linear):
            p.data = p.data.to(dtype)
    invariant = install_invariant_modules(model) if batch_invariant else no_invariant_modules()
    model.to(device)
    model.eval()
    setattr(model, MODEL_META_ATTR, {
        "source": str(path), "format": spec.format, "activation": spec.activation, "ignore": spec.ignore,
        "batch_invariant": bool(batch_invariant), "quantized": quantized, **invariant, "recipe": spec.format,
    })
    return model
