"""from_pretrained: load an NVFP4 checkpoint into a transformers model whose quantized Linear layers are NvFp4Linear
(state_dict in ModelOpt form).

The format that recognises the folder's config (formats/: ModelOpt NVFP4 / W4A16_NVFP4, compressed-tensors
nvfp4-pack-quantized NVFP4 / NVFP4A16; docs/models.md) reads each layer's tensors. Anything else (MXFP4, FP8, AWQ
pre_quant_scale, mixed precision, missing, extra or mistyped tensors) raises UnsupportedCheckpointError or
ValueError: never a silently wrong model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import formats
from .checks import ACTIVATION_DTYPES, require_bool
from .formats import UNSUPPORTED_SUFFIXES, QuantSpec, UnsupportedCheckpointError, files
from .formats.base import dtype_name
from .invariant_mode import install_invariant_modules, no_invariant_modules
from .linear import NvFp4Linear
from .module_tree import MODEL_META_ATTR, matches_any, set_module
from .moe_checkpoint import load_experts


def read_quant_spec(path: Path, config: dict[str, Any]) -> QuantSpec:
    """The quantization described by a checkpoint folder's config.json (and hf_quant_config.json)."""
    return formats.detect(path, config)


# --- arguments and files ---------------------------------------------------------------------------------------


def check_arguments(fn: str, *, batch_invariant: object, dtype: object, trust_remote_code: object) -> None:
    require_bool(fn, "batch_invariant", batch_invariant)
    require_bool(fn, "trust_remote_code", trust_remote_code)
    if dtype not in ACTIVATION_DTYPES:
        raise TypeError(f"{fn}: dtype must be torch.bfloat16 or torch.float16 (the NVFP4 layers' activation dtype), "
                        f"got {dtype!r}")


def in_files(sources: dict[str, Path], keys: list[str]) -> str:
    """The file(s) the named tensors came from, for error messages."""
    names = sorted({str(sources[k]) for k in keys if k in sources})
    return ", ".join(names) or "(no file)"


# --- tensors ---------------------------------------------------------------------------------------------------


def checkpoint_files(path: Path) -> list[Path]:
    return files.checkpoint_files(path)


def read_tensors(path: Path, sources: dict[str, Path] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint folder; `sources`, when given, gets each tensor's file."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(path):
        try:
            shard = load_file(str(f))
        except Exception as exc:  # safetensors raises its own error types; say which file
            raise ValueError(f"nvfp4.from_pretrained: {f} is not a readable safetensors file: {exc}") from exc
        for k, v in shard.items():
            if k in out:
                raise ValueError(f"{path}: tensor {k} appears in more than one shard")
            out[k] = v
            if sources is not None:
                sources[k] = f
    return out


# --- per-module conversion -------------------------------------------------------------------------------------


def _should_quantize(spec: QuantSpec, name: str, module: nn.Module) -> bool:
    if matches_any(name, spec.ignore, module):
        return False
    return spec.targets is None or matches_any(name, spec.targets, module)


# --- model construction ----------------------------------------------------------------------------------------


def _build_model(path: Path, dtype: torch.dtype, trust_remote_code: bool) -> nn.Module:
    """The transformers model of config.json, built one way whatever the config names: the class of
    `architectures[0]` when transformers has it, else the AutoModelForCausalLM class of its model_type; either way
    through `_from_config(config, dtype=...)`, which keeps buffers that the model makes in float32 (rotary inv_freq)
    in float32. Nothing is cast afterwards (a model-wide .to(dtype) would cast those buffers and move the logits)."""
    import transformers

    where = path / "config.json"
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (ValueError, KeyError) as exc:
        raise UnsupportedCheckpointError(f"nvfp4.from_pretrained: {where}: transformers cannot read this config "
                                         f"({type(exc).__name__}: {exc})") from exc
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # we do the quantized loading; transformers must not
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs and isinstance(archs[0], str) else None
    if cls is not None and not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        cls = None
    init = getattr(getattr(transformers, "modeling_utils", None), "no_init_weights", None)
    ctx = init() if init is not None else _nullcontext()
    with ctx:
        if cls is not None:
            build = cls._from_config
        else:
            def build(cfg, **kwargs):
                return transformers.AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code, **kwargs)
        try:
            try:
                model = build(config, dtype=dtype)
            except TypeError:  # transformers < 4.56 spells it torch_dtype
                model = build(config, torch_dtype=dtype)
        except ValueError as exc:
            raise UnsupportedCheckpointError(
                f"nvfp4.from_pretrained: {where}: no transformers model class for architectures={archs} "
                f"(model_type={getattr(config, 'model_type', None)!r}): {exc}") from exc
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
    fn = "nvfp4.from_pretrained"
    check_arguments(fn, batch_invariant=batch_invariant, dtype=dtype, trust_remote_code=trust_remote_code)
    if tp_group is not None:
        from .parallel_loading import from_pretrained_tp

        return from_pretrained_tp(path, tp_group=tp_group, batch_invariant=batch_invariant, device=device, dtype=dtype,
                                  backend=backend, trust_remote_code=trust_remote_code)
    try:
        device = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{fn}: device {device!r} is not a device (cpu, cuda, cuda:N): {exc}") from None
    path = files.resolve_folder(path, fn)
    config = files.read_json(path / "config.json", fn)
    spec = read_quant_spec(path, config)
    fmt = formats.get(spec.format)
    sources: dict[str, Path] = {}
    tensors = read_tensors(path, sources)
    formats.check_tensor_format(spec, tensors, path)
    model = _build_model(path, dtype, trust_remote_code)

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
        shard = in_files(sources, [f"{name}.{k}" for k in own])
        try:
            sd, extras = fmt.read_layer(name, own, spec.activation)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{shard}: {exc}") from exc
        if ("bias" in sd) != (lin.bias is not None):
            raise ValueError(f"nvfp4.from_pretrained: {name}: the model {'has' if lin.bias is not None else 'has no'} bias, the checkpoint {'has' if 'bias' in sd else 'has none'}")
        layer = NvFp4Linear(
            lin.in_features, lin.out_features, lin.bias is not None, batch_invariant=batch_invariant,
            device="cpu", dtype=dtype, activation=spec.activation, backend=backend,
        )
        try:
            layer.load_state_dict(sd, strict=True)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise type(exc)(f"nvfp4.from_pretrained: {shard}: {name}: {exc}") from exc
        fmt.remember(layer, extras)
        set_module(model, name, layer)
        consumed.update(f"{name}.{k}" for k in own)
        quantized.append(name)

    experts = load_experts(model, tensors, fmt, spec, lambda n, m: _should_quantize(spec, n, m),
                           batch_invariant=batch_invariant, dtype=dtype, backend=backend)
    consumed |= experts.consumed
    quantized += experts.quantized
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
    # What transformers' own loading keeps in float32 (the model class's _keep_in_fp32_modules_strict, which differs
    # between transformers versions: DeepSeek-V3's e_score_correction_bias buffer, and in later versions its router
    # weight) is float32 before the checkpoint's values are copied in, parameters and buffers alike.
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if any(k in name for k in keep_fp32) and t.is_floating_point() and t.dtype != torch.float32:
            t.data = t.data.float()
    missing, unexpected = model.load_state_dict(rest, strict=False)
    if unexpected:
        raise ValueError(f"nvfp4.from_pretrained: tensors the model does not have: {unexpected[:8]}")
    tied = set()
    if getattr(model.config, "tie_word_embeddings", False):
        tied = {k for k in missing if k.endswith("lm_head.weight")}
    done = tuple(f"{q}." for q in quantized + experts.unquantized)
    missing = [k for k in missing if k not in tied and not k.startswith(done)]
    if missing:
        raise ValueError(f"nvfp4.from_pretrained: tensors missing from the checkpoint: {missing[:8]}")
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.dtype != dtype and not isinstance(model.get_submodule(name.rpartition(".")[0]), NvFp4Linear):
            if not (p.dtype == torch.float32 and any(k in name for k in keep_fp32)):
                p.data = p.data.to(dtype)
    invariant = install_invariant_modules(model) if batch_invariant else no_invariant_modules()
    model.to(device)
    model.eval()
    setattr(model, MODEL_META_ATTR, {
        "source": str(path), "format": spec.format, "activation": spec.activation, "ignore": spec.ignore,
        "batch_invariant": bool(batch_invariant), "quantized": quantized, **invariant, "recipe": spec.format,
    })
    return model
