"""from_pretrained: load a ModelOpt or compressed-tensors NVFP4 checkpoint into a transformers model whose quantized
Linear layers are NvFp4Linear (state_dict in ModelOpt form).

Supported (docs/models.md):
- ModelOpt: `hf_quant_config.json` or `quantization_config.quant_method == "modelopt"`, quant_algo `NVFP4`
  (static input_scale -> activation="static") or `W4A16_NVFP4` (activation="none").
- compressed-tensors: `quant_method == "compressed-tensors"`, format `nvfp4-pack-quantized`, weights
  {num_bits 4, type float, group_size 16, strategy tensor_group}; input activations either the NVFP4 ones
  (`dynamic: "local"`: block scales computed at run time against the stored static `input_global_scale`, which is
  exactly ModelOpt's static mode -> activation="static") or absent (NVFP4A16 -> activation="none").
  Encode global scales G become decode scales fp32(1/G) (recipes.decode_scale_for_encode); the exact G is kept on
  the layer for save_pretrained.
Anything else (MXFP4, FP8, AWQ pre_quant_scale, mixed precision, missing, extra or mistyped tensors) raises
UnsupportedCheckpointError or ValueError: never a silently wrong model.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .convert import CT_ENCODE_ATTR, MODEL_META_ATTR, install_invariant_modules, matches_any, no_invariant_modules
from .module_tree import set_module
from .linear import NvFp4Linear
from .recipes import decode_scale_for_encode


class UnsupportedCheckpointError(ValueError):
    """The checkpoint uses a quantization format or feature nvfp4 does not load."""


@dataclass
class QuantSpec:
    format: str  # "modelopt" | "compressed-tensors"
    activation: str  # "static" | "none"
    ignore: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=lambda: ["Linear"])
    description: str = ""


# --- configuration ---------------------------------------------------------------------------------------------


def _modelopt_spec(algo: str | None, ignore: list[str], source: str) -> QuantSpec:
    if algo == "NVFP4":
        return QuantSpec("modelopt", "static", ignore, description=f"ModelOpt NVFP4 ({source})")
    if algo == "W4A16_NVFP4":
        return QuantSpec("modelopt", "none", ignore, description=f"ModelOpt W4A16_NVFP4 ({source})")
    raise UnsupportedCheckpointError(
        f"ModelOpt quant_algo {algo!r} is not supported (supported: NVFP4, W4A16_NVFP4). "
        "MXFP4, FP8, NVFP4_AWQ/SVD (pre_quant_scale) and MIXED_PRECISION checkpoints are not loaded by nvfp4."
    )


def _ct_spec(qc: dict[str, Any]) -> QuantSpec:
    top_format = qc.get("format")
    groups = qc.get("config_groups") or {}
    if len(groups) != 1:
        raise UnsupportedCheckpointError(
            f"compressed-tensors checkpoint with {len(groups)} config_groups: only one NVFP4 group is supported"
        )
    if qc.get("sparsity_config") or qc.get("transform_config"):
        raise UnsupportedCheckpointError("compressed-tensors sparsity/transform configs are not supported")
    if qc.get("kv_cache_scheme"):
        raise UnsupportedCheckpointError("compressed-tensors kv_cache_scheme is not supported")
    (name, group), = groups.items()
    fmt = group.get("format") or top_format
    if fmt != "nvfp4-pack-quantized":
        raise UnsupportedCheckpointError(
            f"compressed-tensors format {fmt!r} is not supported (only 'nvfp4-pack-quantized'; MXFP4, FP8 and int "
            "formats are not loaded by nvfp4)"
        )
    status = qc.get("quantization_status", "compressed")
    if status != "compressed":
        raise UnsupportedCheckpointError(f"compressed-tensors quantization_status {status!r}: expected 'compressed'")
    w = group.get("weights") or {}
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
    return QuantSpec(
        "compressed-tensors", activation, list(qc.get("ignore") or []), list(group.get("targets") or ["Linear"]),
        description=f"compressed-tensors nvfp4-pack-quantized ({kind})",
    )


def read_quant_spec(path: Path, config: dict[str, Any]) -> QuantSpec:
    """The quantization described by a checkpoint folder's config.json (and hf_quant_config.json)."""
    hf_qc_file = path / "hf_quant_config.json"
    qc = config.get("quantization_config")
    if hf_qc_file.is_file():
        hq = json.loads(hf_qc_file.read_text())
        q = hq.get("quantization", hq)
        if q.get("group_size", 16) != 16:
            raise UnsupportedCheckpointError(f"ModelOpt group_size {q.get('group_size')}: NVFP4 needs 16")
        if q.get("kv_cache_quant_algo"):
            raise UnsupportedCheckpointError(f"ModelOpt kv_cache_quant_algo {q['kv_cache_quant_algo']!r} is not supported")
        return _modelopt_spec(q.get("quant_algo"), list(q.get("exclude_modules") or []), "hf_quant_config.json")
    if qc is None:
        raise UnsupportedCheckpointError(f"{path}: no quantization_config in config.json and no hf_quant_config.json")
    method = qc.get("quant_method")
    if method == "modelopt":
        if qc.get("kv_cache_scheme") or qc.get("kv_cache_quant_algo"):
            raise UnsupportedCheckpointError("ModelOpt kv-cache quantization is not supported")
        ignore = qc.get("ignore", qc.get("exclude_modules")) or []
        return _modelopt_spec(qc.get("quant_algo"), list(ignore), "config.json")
    if method == "compressed-tensors":
        return _ct_spec(qc)
    raise UnsupportedCheckpointError(f"quant_method {method!r} is not supported (modelopt or compressed-tensors NVFP4)")


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

_MODELOPT_KEYS = ("weight", "weight_scale", "weight_scale_2", "input_scale", "bias")
_CT_KEYS = ("weight_packed", "weight_scale", "weight_global_scale", "input_global_scale", "weight_shape", "bias")
_UNSUPPORTED_SUFFIXES = ("pre_quant_scale", "svdquant_lora_a", "svdquant_lora_b", "weight_zero_point", "input_zero_point")


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _global_scalar(fn: str, key: str, t: torch.Tensor) -> torch.Tensor:
    if t.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"{fn}: {key} must be float32 (or bfloat16), got {_dtype_name(t)}")
    if t.numel() != 1:
        raise ValueError(f"{fn}: {key} must hold one value, got shape {tuple(t.shape)}")
    v = t.float().reshape(())
    if not (torch.isfinite(v) and v > 0):
        raise ValueError(f"{fn}: {key} must be finite and > 0, got {v.item()}")
    return v


def _modelopt_state(name: str, t: dict[str, torch.Tensor], activation: str) -> dict[str, torch.Tensor]:
    fn = "nvfp4.from_pretrained"
    if t["weight"].dtype != torch.uint8:
        raise TypeError(f"{fn}: {name}.weight must be packed uint8 for an NVFP4 layer, got {_dtype_name(t['weight'])}")
    for req in ("weight_scale", "weight_scale_2"):
        if req not in t:
            raise ValueError(f"{fn}: {name}.{req} is missing")
    sd = {"weight": t["weight"], "weight_scale": t["weight_scale"],
          "weight_scale_2": _global_scalar(fn, f"{name}.weight_scale_2", t["weight_scale_2"])}
    if activation == "static":
        if "input_scale" not in t:
            raise ValueError(f"{fn}: {name}.input_scale is missing (quant_algo NVFP4 has static input scales)")
        sd["input_scale"] = _global_scalar(fn, f"{name}.input_scale", t["input_scale"])
    elif "input_scale" in t:
        raise ValueError(f"{fn}: {name}.input_scale present in a W4A16 checkpoint")
    if "bias" in t:
        sd["bias"] = t["bias"]
    return sd


def _ct_state(name: str, t: dict[str, torch.Tensor], activation: str) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    fn = "nvfp4.from_pretrained"
    for req in ("weight_packed", "weight_scale", "weight_global_scale"):
        if req not in t:
            raise ValueError(f"{fn}: {name}.{req} is missing")
    packed = t["weight_packed"]
    if packed.dtype != torch.uint8:
        raise TypeError(f"{fn}: {name}.weight_packed must be uint8, got {_dtype_name(packed)}")
    if "weight_shape" in t:  # older compressed-tensors versions store the unpacked shape
        shape = tuple(int(v) for v in t["weight_shape"].reshape(-1).tolist())
        if shape != (packed.shape[0], packed.shape[1] * 2):
            raise ValueError(f"{fn}: {name}.weight_shape {shape} does not match weight_packed {tuple(packed.shape)}")
    enc_w = _global_scalar(fn, f"{name}.weight_global_scale", t["weight_global_scale"])
    sd = {"weight": packed, "weight_scale": t["weight_scale"], "weight_scale_2": decode_scale_for_encode(enc_w)}
    encodes = {"weight_global_scale": float(enc_w)}
    if activation == "static":
        if "input_global_scale" not in t:
            raise ValueError(f"{fn}: {name}.input_global_scale is missing (NVFP4 W4A4 has a static input global scale)")
        enc_i = _global_scalar(fn, f"{name}.input_global_scale", t["input_global_scale"])
        sd["input_scale"] = decode_scale_for_encode(enc_i)
        encodes["input_global_scale"] = float(enc_i)
    elif "input_global_scale" in t:
        raise ValueError(f"{fn}: {name}.input_global_scale present in an NVFP4A16 checkpoint")
    if "bias" in t:
        sd["bias"] = t["bias"]
    return sd, encodes


def _is_quantized_on_disk(fmt: str, name: str, tensors: dict[str, torch.Tensor]) -> bool:
    if fmt == "modelopt":
        w = tensors.get(f"{name}.weight")
        return (w is not None and w.dtype == torch.uint8) or f"{name}.weight_scale" in tensors
    return f"{name}.weight_packed" in tensors


def _should_quantize(spec: QuantSpec, name: str, module: nn.Module) -> bool:
    if matches_any(name, spec.ignore, module):
        return False
    if spec.format == "compressed-tensors":
        return matches_any(name, spec.targets, module)
    return True


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
) -> nn.Module:
    """Load an NVFP4 checkpoint (ModelOpt or compressed-tensors, safetensors, sharded or not) as a transformers
    model whose quantized Linears are NvFp4Linear. batch_invariant=True builds the layers in invariant mode and
    installs the invariant replacements around them (convert.install_invariant_modules)."""
    path = _resolve(path)
    config = json.loads((path / "config.json").read_text())
    spec = read_quant_spec(path, config)
    tensors = read_tensors(path)
    model = _build_model(path, dtype, trust_remote_code)
    device = torch.device(device) if device is not None else torch.device("cpu")

    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    consumed: set[str] = set()
    quantized: list[str] = []
    for name, lin in linears:
        want = _should_quantize(spec, name, lin)
        have = _is_quantized_on_disk(spec.format, name, tensors)
        if want and not have:
            if f"{name}.weight" not in tensors and f"{name}.weight_packed" not in tensors:
                raise ValueError(f"nvfp4.from_pretrained: {name} is missing from the checkpoint (config says it is quantized)")
            w = tensors.get(f"{name}.weight")
            raise TypeError(
                f"nvfp4.from_pretrained: {name} should be NVFP4 per the config ({spec.description}) but the checkpoint "
                f"holds an unquantized weight ({_dtype_name(w) if w is not None else '?'})"
            )
        if have and not want:
            raise ValueError(
                f"nvfp4.from_pretrained: {name} holds NVFP4 tensors but the config excludes it from quantization "
                f"(ignore={spec.ignore}); refusing to guess"
            )
        if not want:
            continue
        keys = _MODELOPT_KEYS if spec.format == "modelopt" else _CT_KEYS
        own = {k: tensors[f"{name}.{k}"] for k in keys if f"{name}.{k}" in tensors}
        bad = [s for s in _UNSUPPORTED_SUFFIXES if f"{name}.{s}" in tensors]
        if bad:
            raise UnsupportedCheckpointError(f"nvfp4.from_pretrained: {name} has {bad}: AWQ/SVDQuant/zero-point variants are not supported")
        if spec.format == "modelopt":
            sd, encodes = _modelopt_state(name, own, spec.activation), {}
        else:
            sd, encodes = _ct_state(name, own, spec.activation)
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
        if encodes:
            setattr(layer, CT_ENCODE_ATTR, encodes)
        set_module(model, name, layer)
        consumed.update(f"{name}.{k}" for k in own)
        quantized.append(name)

    if not quantized:
        raise ValueError(f"nvfp4.from_pretrained: no Linear of the model is quantized in {path} ({spec.description})")
    rest = {k: v for k, v in tensors.items() if k not in consumed}
    leftovers = [k for k in rest if k.rsplit(".", 1)[-1] in _CT_KEYS + _UNSUPPORTED_SUFFIXES + ("input_scale", "weight_scale_2")
                 and not (k.endswith(".weight") or k.endswith(".bias"))]
    if leftovers:
        raise UnsupportedCheckpointError(
            f"nvfp4.from_pretrained: quantized tensors outside any nn.Linear (e.g. fused MoE experts) are not supported: "
            f"{leftovers[:6]}"
        )
    for k, v in rest.items():
        if v.dtype in (torch.uint8, torch.float8_e4m3fn, torch.int8):
            raise UnsupportedCheckpointError(f"nvfp4.from_pretrained: {k} is {_dtype_name(v)} but belongs to no quantized Linear")
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
