"""Building a tensor-parallel model from an NVFP4 checkpoint: every rank reads only the tensors and slices it holds.

The transformers model is built on the meta device (no weights materialised), its Llama-family projections are
replaced by this rank's parallel layers (placement in docs/parallel.md), and each layer's slice is read with
safetensors' lazy `safe_open` slicing; the tensors every rank keeps (embedding, norms, lm_head and any other
module outside the placement) are read whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import formats, parallel_comm as comm
from .formats import UNSUPPORTED_SUFFIXES, UnsupportedCheckpointError
from .invariant_mode import install_invariant_modules, no_invariant_modules
from .linear import NvFp4Linear
from .formats import files
from .loading import _build_model, _should_quantize, checkpoint_files, read_quant_spec
from .module_tree import MODEL_META_ATTR, set_module
from .parallel_attention import install_per_head_attention, shard_attention
from .parallel_linear import ColumnParallelNvFp4Linear, RowParallelNvFp4Linear, _ParallelNvFp4Linear
from .parallel_plan import even_range, head_split

FN = "nvfp4.from_pretrained"
ATTENTION_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJ = ("gate_proj", "up_proj", "down_proj")

# A quantized layer's on-disk tensors by how a shard takes them (formats/: ModelOpt and compressed-tensors names):
# [N, K / per] by rows and K columns, [N] by rows, the unpacked shape [2] rewritten to the shard's; the rest (the
# global scales) are single values every shard keeps.
_PER_ROW = {"weight": 2, "weight_packed": 2, "weight_scale": 16}
_PER_OUTPUT = ("bias",)
_SHAPE = ("weight_shape",)


class LazyCheckpoint:
    """The safetensors files of a checkpoint, read tensor by tensor or slice by slice; counts the bytes read."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self._files: dict[str, Any] = {}
        self.where: dict[str, str] = {}
        self.meta: dict[str, torch.Tensor] = {}  # name -> meta tensor of its dtype and shape: what exists, no data
        for f in checkpoint_files(path):
            handle = safe_open(str(f), framework="pt", device="cpu")
            self._files[str(f)] = handle
            for name in handle.keys():
                if name in self.where:
                    raise ValueError(f"{path}: tensor {name} appears in more than one shard")
                self.where[name] = str(f)
                sl = handle.get_slice(name)
                self.meta[name] = torch.empty(sl.get_shape(), dtype=_dtype(sl.get_dtype()), device="meta")
        self.bytes_read = 0
        self.total_bytes = sum(t.numel() * t.element_size() for t in self.meta.values())

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> torch.Tensor:
        """The tensor, or only the part `index` selects (read from the file without the rest)."""
        handle = self._files[self.where[name]]
        t = handle.get_tensor(name) if index is None else handle.get_slice(name)[index]
        self.bytes_read += t.numel() * t.element_size()
        return t


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8,
    "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


def _dtype(code: str) -> torch.dtype:
    try:
        return _SAFETENSORS_DTYPES[code]
    except KeyError:
        raise UnsupportedCheckpointError(f"{FN}: safetensors dtype {code} is not read by nvfp4") from None


def _read_shard(ckpt: LazyCheckpoint, name: str, layer: _ParallelNvFp4Linear | NvFp4Linear,
                keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The layer's on-disk tensors (suffix -> tensor), sliced to what the layer holds, full shapes checked first."""
    n, k = (layer.full_out_features, layer.full_in_features) if isinstance(layer, _ParallelNvFp4Linear) \
        else (layer.out_features, layer.in_features)
    (n0, n1), (k0, k1) = (layer.out_range, layer.in_range) if isinstance(layer, _ParallelNvFp4Linear) \
        else ((0, n), (0, k))
    own: dict[str, torch.Tensor] = {}
    for key in keys:
        full = f"{name}.{key}"
        if full not in ckpt.meta:
            continue
        shape = tuple(ckpt.meta[full].shape)
        if key in _PER_ROW:
            per = _PER_ROW[key]
            if shape != (n, k // per):
                raise ValueError(f"{FN}: {full} must have shape {(n, k // per)} for a {n} x {k} layer, got {shape}")
            own[key] = ckpt.read(full, (slice(n0, n1), slice(k0 // per, k1 // per)))
        elif key in _PER_OUTPUT:
            if shape != (n,):
                raise ValueError(f"{FN}: {full} must have shape {(n,)}, got {shape}")
            own[key] = ckpt.read(full, (slice(n0, n1),))
        elif key in _SHAPE:
            stored = tuple(int(v) for v in ckpt.read(full).reshape(-1).tolist())
            if stored != (n, k):
                raise ValueError(f"{FN}: {full} {stored} does not match the model's {n} x {k} layer")
            own[key] = torch.tensor([n1 - n0, k1 - k0], dtype=ckpt.meta[full].dtype)
        else:
            if ckpt.meta[full].numel() != 1:
                raise UnsupportedCheckpointError(
                    f"{FN}: {full} has shape {shape}; a tensor-parallel shard knows how to split "
                    f"{sorted(_PER_ROW) + list(_PER_OUTPUT)} and single values only")
            own[key] = ckpt.read(full)
    return own


def _projections(model: nn.Module) -> dict[str, str]:
    """name -> "q_proj" ... "down_proj" for every decoder layer; raises where the model is not Llama-shaped."""
    found: dict[str, str] = {}
    for prefix, module in model.named_modules():
        attn, mlp = getattr(module, "self_attn", None), getattr(module, "mlp", None)
        if attn is None and mlp is None:
            continue
        for part, names, what in ((attn, ATTENTION_PROJ, "self_attn"), (mlp, MLP_PROJ, "mlp")):
            missing = [p for p in names if not isinstance(getattr(part, p, None), nn.Linear)]
            if part is None or missing:
                raise UnsupportedCheckpointError(
                    f"{FN}: tensor parallelism places Llama-family layers ({what} with {', '.join(names)} Linears); "
                    f"{prefix}.{what} lacks {missing or 'everything'} (fused or MoE projections are not placed)")
            found.update({f"{prefix}.{what}.{p}": p for p in names})
    if not found:
        raise UnsupportedCheckpointError(f"{FN}: tensor parallelism found no decoder layer (self_attn + mlp) to split")
    return found


def _head_split(config: Any, group: comm.Group):
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return head_split(heads, kv_heads, comm.degree(group), comm.rank(group))


def _parallel_layer(role: str, lin: nn.Linear, head_dim: int, config: Any, group: comm.Group, row_mode: str,
                    **kwargs) -> _ParallelNvFp4Linear:
    d, r = comm.degree(group), comm.rank(group)
    split = _head_split(config, group)
    common = dict(group=group, **kwargs)
    bias = lin.bias is not None
    if role == "q_proj":
        return ColumnParallelNvFp4Linear(lin.in_features, lin.out_features, bias,
                                         out_range=(split.q0 * head_dim, split.q1 * head_dim), **common)
    if role in ("k_proj", "v_proj"):
        return ColumnParallelNvFp4Linear(lin.in_features, lin.out_features, bias,
                                         out_range=(split.kv0 * head_dim, split.kv1 * head_dim), **common)
    if role in ("gate_proj", "up_proj"):
        return ColumnParallelNvFp4Linear(lin.in_features, lin.out_features, bias,
                                         out_range=even_range(FN, f"{role}.out_features", lin.out_features, d, r, 16),
                                         **common)
    return RowParallelNvFp4Linear(lin.in_features, lin.out_features, bias, mode=row_mode, **common)


def _materialise_rotary(model: nn.Module) -> None:
    """Rotary embeddings keep computed, non-persistent buffers; on the meta device they are empty: rebuild them."""
    for name, module in list(model.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)) and "Rotary" in type(module).__name__ \
                and hasattr(module, "config"):
            set_module(model, name, type(module)(config=module.config))


def from_pretrained_tp(
    path: str | os.PathLike,
    *,
    tp_group: comm.Group,
    batch_invariant: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    backend: str = "auto",
    trust_remote_code: bool = False,
    row_mode: str = "auto",
) -> nn.Module:
    """This rank's part of a tensor-parallel model over tp_group (nvfp4.from_pretrained with tp_group=...)."""
    fn = "nvfp4.from_pretrained"
    path = files.resolve_folder(path, fn)
    config = files.read_json(path / "config.json", fn)
    spec = read_quant_spec(path, config)
    fmt = formats.get(spec.format)
    ckpt = LazyCheckpoint(path)
    with torch.device("meta"):
        model = _build_model(path, dtype, trust_remote_code)
    placed = _projections(model)
    layer_kwargs = dict(batch_invariant=batch_invariant, device="cpu", dtype=dtype, activation=spec.activation,
                        backend=backend)

    consumed: set[str] = set()
    quantized: list[str] = []
    row_modes: dict[str, str | None] = {}
    for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        want = _should_quantize(spec, name, lin)
        have = fmt.is_quantized_on_disk(name, ckpt.meta)
        if want != have:
            raise ValueError(f"{FN}: {name} is {'' if have else 'not '}NVFP4 in the checkpoint but the config "
                             f"{'excludes' if have else 'quantizes'} it ({spec.description})")
        if name in placed and not want:
            raise UnsupportedCheckpointError(f"{FN}: tensor parallelism splits NVFP4 projections only; {name} is not "
                                             f"quantized in this checkpoint")
        if not want:
            continue
        bad = [s for s in UNSUPPORTED_SUFFIXES if f"{name}.{s}" in ckpt.meta]
        if bad:
            raise UnsupportedCheckpointError(
                f"{FN}: {name} has {bad}: AWQ/SVDQuant/zero-point variants are not supported")
        if name in placed:
            attn = model.get_submodule(f"{name.rsplit('.', 2)[0]}.self_attn")
            head_dim = getattr(attn, "head_dim", None) or attn.q_proj.out_features // model.config.num_attention_heads
            layer = _parallel_layer(placed[name], lin, head_dim, model.config, tp_group, row_mode, **layer_kwargs)
            if isinstance(layer, RowParallelNvFp4Linear):
                row_modes[name] = layer.mode
        else:  # outside the placement (a quantized lm_head): every rank holds it whole
            layer = NvFp4Linear(lin.in_features, lin.out_features, lin.bias is not None, **layer_kwargs)
        own = _read_shard(ckpt, name, layer, fmt.LAYER_KEYS)
        sd, extras = fmt.read_layer(name, own, spec.activation)
        if ("bias" in sd) != (layer.bias is not None):
            raise ValueError(f"{FN}: {name}: the model {'has' if layer.bias is not None else 'has no'} bias, the "
                             f"checkpoint {'has' if 'bias' in sd else 'has none'}")
        try:
            layer.load_state_dict(sd, strict=True)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise type(exc)(f"{FN}: {name}: {exc}") from exc
        fmt.remember(layer, extras)
        set_module(model, name, layer)
        consumed.update(f"{name}.{k}" for k in fmt.LAYER_KEYS)
        quantized.append(name)

    for prefix in {n.rsplit(".", 2)[0] for n, role in placed.items() if role == "q_proj"}:
        shard_attention(model.get_submodule(f"{prefix}.self_attn"), _head_split(model.config, tp_group))

    rest_names = [k for k in ckpt.meta if k not in consumed]
    quantized_suffixes = {k for f in formats.REGISTRY for k in f.LAYER_KEYS} - {"weight", "bias"}
    leftovers = [k for k in rest_names if k.rsplit(".", 1)[-1] in quantized_suffixes | set(UNSUPPORTED_SUFFIXES)]
    if leftovers:
        raise UnsupportedCheckpointError(
            f"{FN}: quantized tensors outside any nn.Linear are not supported: {leftovers[:6]}")
    rest = {k: ckpt.read(k) for k in rest_names}
    for k, v in rest.items():
        if v.dtype in (torch.uint8, torch.float8_e4m3fn, torch.int8):
            raise UnsupportedCheckpointError(f"{FN}: {k} is {v.dtype} but belongs to no quantized Linear")
    missing, unexpected = model.load_state_dict(rest, strict=False, assign=True)
    if unexpected:
        raise ValueError(f"{FN}: tensors the model does not have: {unexpected[:8]}")
    tied = {k for k in missing if k.endswith("lm_head.weight")} if getattr(model.config, "tie_word_embeddings", False) \
        else set()
    done = tuple(f"{q}." for q in quantized)
    missing = [k for k in missing if k not in tied and not k.startswith(done)]
    if missing:
        raise ValueError(f"{FN}: tensors missing from the checkpoint: {missing[:8]}")
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    _materialise_rotary(model)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise UnsupportedCheckpointError(f"{FN}: tensor-parallel loading left these without values: {still_meta[:8]}")
    for name, p in model.named_parameters():
        owner = model.get_submodule(name.rpartition(".")[0])
        if p.is_floating_point() and p.dtype != dtype and not isinstance(owner, NvFp4Linear):
            p.data = p.data.to(dtype)

    invariant = install_invariant_modules(model) if batch_invariant else no_invariant_modules()
    if batch_invariant:
        invariant["invariant_attention"] = install_per_head_attention(model)
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    model.eval()
    setattr(model, MODEL_META_ATTR, {
        "source": str(path), "format": spec.format, "activation": spec.activation, "ignore": spec.ignore,
        "batch_invariant": bool(batch_invariant), "quantized": quantized, **invariant, "recipe": spec.format,
        "tensor_parallel": {"degree": comm.degree(tp_group), "rank": comm.rank(tp_group), "row_modes": row_modes,
                            "bytes_read": ckpt.bytes_read, "checkpoint_bytes": ckpt.total_bytes},
    })
    return model
