"""quantize_model: convert the nn.Linear layers of a bf16 model to NvFp4Linear in place, plus the helpers that
loading and saving share (module-name patterns, fused shard groups, module replacement).

Fused shards (q/k/v, gate/up) share one weight amax, as ModelOpt (`preprocess_linear_fusion`) and llm-compressor
(fused observers) do, so they share one global scale (docs/recipes.md). Calibration batches give static input
scales (the max |input| each Linear saw, taken by forward pre-hooks; shards of one group see the same input and
share it too); without calibration, activations get per-token scales.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .format import GLOBAL_SCALE_RANGE
from .invariant_attention import install_invariant_attention
from .invariant_norm import install_invariant_rms_norms
from .invariant_ops import InvariantLinear
from .linear import NvFp4Linear
from .module_tree import set_module
from .quantize import quantize
from .recipes import RECIPES, compressed_tensors_encode_scale, decode_scale_for_encode

# Shards that inference engines fuse into one GEMM and that the tools give one global scale.
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("w1", "w3"))

# Attribute (not a buffer: the state_dict stays in ModelOpt form) holding the exact compressed-tensors encode
# values of a layer when they are known, {"weight_global_scale": float, "input_global_scale": float}. fp32 values
# are exact as Python floats. save_pretrained(format="compressed-tensors") writes them back when they still agree
# with the layer's decode scales, so a round trip reproduces the file bytes (docs/recipes.md, "stored global scale").
CT_ENCODE_ATTR = "nvfp4_ct_encode_scales"

# Attribute set on a converted/loaded model: what was done to it (read by save_pretrained).
MODEL_META_ATTR = "nvfp4_meta"


def matches(name: str, pattern: str, module: nn.Module | None = None, *, suffix: bool = False) -> bool:
    """compressed-tensors / ModelOpt module patterns: "re:<regex>" (re.match on the module name), an exact name, a
    module class name (compressed-tensors targets such as "Linear"), or an fnmatch wildcard (ModelOpt's
    exclude_modules). With suffix=True (user-given ignore lists) a plain name also matches as the trailing
    components of a path ("lm_head" matches "model.lm_head")."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    if name == pattern or (suffix and name.endswith("." + pattern)):
        return True
    if module is not None and type(module).__name__ == pattern:
        return True
    return any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern)


def matches_any(name: str, patterns: Iterable[str], module: nn.Module | None = None, *, suffix: bool = False) -> bool:
    return any(matches(name, p, module, suffix=suffix) for p in patterns)


def fused_group_of(name: str, names: Iterable[str]) -> tuple[str, ...]:
    """The names (among `names`) that form one fused group with `name` (itself alone if none)."""
    if "." in name:
        parent, leaf = name.rsplit(".", 1)
        prefix = parent + "."
    else:
        parent, leaf, prefix = "", name, ""
    available = set(names)
    for group in FUSED_GROUPS:
        if leaf in group:
            members = tuple(prefix + m for m in group if prefix + m in available)
            if name in members:
                return members
    return (name,)


def install_invariant_modules(model: nn.Module) -> dict[str, Any]:
    """The batch-invariant mode's module replacements (from_pretrained and quantize_model with batch_invariant=True):
    every remaining (unquantized) nn.Linear becomes InvariantLinear, every Llama-formula RMSNorm becomes
    InvariantRMSNorm, and SDPA attention runs one sequence at a time. Returns what was installed, as the model's
    nvfp4_meta records it (no_invariant_modules() when nothing is)."""
    linears = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    for n in linears:
        set_module(model, n, InvariantLinear(model.get_submodule(n)))
    return {"invariant_linears": linears, "invariant_norms": install_invariant_rms_norms(model),
            "invariant_attention": install_invariant_attention(model)}


def no_invariant_modules() -> dict[str, Any]:
    return {"invariant_linears": [], "invariant_norms": [], "invariant_attention": False}


def _as_call(model: nn.Module, batch: Any) -> None:
    if isinstance(batch, Mapping):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


def _calibrate(model: nn.Module, names: list[str], calibration: Iterable[Any]) -> dict[str, torch.Tensor]:
    amax: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module, args):
            x = args[0].detach()
            m = x.abs().amax().float().cpu()
            amax[name] = m if name not in amax else torch.maximum(amax[name], m)

        return hook

    for n in names:
        handles.append(model.get_submodule(n).register_forward_pre_hook(hook_for(n)))
    batches = 0
    try:
        with torch.no_grad():
            for batch in calibration:
                _as_call(model, batch)
                batches += 1
    finally:
        for h in handles:
            h.remove()
    if batches == 0:
        raise ValueError("quantize_model: calibration is empty; pass at least one batch, or calibration=None for per-token scales")
    unseen = [n for n in names if n not in amax]
    if unseen:
        raise ValueError(f"quantize_model: calibration never reached these Linears, so they have no input scale: {unseen[:8]}")
    return amax


def quantize_model(
    model: nn.Module,
    *,
    calibration: Iterable[Any] | None = None,
    ignore: Iterable[str] = ("lm_head",),
    batch_invariant: bool = False,
    recipe: str = "modelopt",
    weight_only: bool = False,
    backend: str = "auto",
) -> nn.Module:
    """Convert the nn.Linear layers of `model` (not matching `ignore`) to NvFp4Linear, in place; returns `model`.

    calibration: an iterable of model inputs (a tensor, a tuple of positional args or a dict of keyword args per
    batch); each Linear then gets a static input scale from the max |input| it saw. Without it, activations get
    per-token scales (not representable in the ModelOpt or compressed-tensors formats: save_pretrained refuses
    such a model). weight_only=True makes W4A16 layers (activation="none"). recipe: "modelopt" or
    "compressed-tensors" reproduces that tool's weight bytes. batch_invariant=True also replaces the remaining
    bf16 nn.Linear layers (lm_head) by nvfp4.invariant_ops.InvariantLinear.
    """
    if recipe not in RECIPES:
        raise ValueError(f"quantize_model: recipe must be one of {RECIPES}, got {recipe!r}")
    if isinstance(ignore, str):
        ignore = (ignore,)
    ignore = tuple(ignore)
    if weight_only and calibration is not None:
        raise ValueError("quantize_model: weight_only=True takes no calibration (activations stay bf16)")
    targets = [
        n for n, m in model.named_modules() if type(m) is nn.Linear and not matches_any(n, ignore, m, suffix=True)
    ]
    if not targets:
        raise ValueError("quantize_model: no nn.Linear layer left to quantize (check `ignore`)")
    for n in targets:
        lin = model.get_submodule(n)
        if lin.in_features % 16:
            raise ValueError(f"quantize_model: {n} has in_features={lin.in_features}, not a multiple of 16; add it to `ignore`")
    input_amax = _calibrate(model, targets, calibration) if calibration is not None else None

    def group_max(values: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        return torch.stack([values[m] for m in fused_group_of(name, targets)]).amax()

    weight_amax = {n: model.get_submodule(n).weight.detach().abs().amax().float().cpu() for n in targets}
    mode = "none" if weight_only else ("static" if input_amax is not None else "per-token")
    for n in targets:
        lin: nn.Linear = model.get_submodule(n)
        w = lin.weight.detach()
        dtype = w.dtype if w.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        layer = NvFp4Linear(
            lin.in_features, lin.out_features, lin.bias is not None, batch_invariant=batch_invariant,
            device=w.device, dtype=dtype, activation=mode, backend=backend,
        )
        q = quantize(w, amax=group_max(weight_amax, n), recipe=recipe)
        encodes: dict[str, float] = {}
        with torch.no_grad():
            layer.weight.copy_(q.data)
            layer.weight_scale.copy_(q.scale)
            layer.weight_scale_2.copy_(q.global_scale)
            if q.encode_scale is not None:
                encodes["weight_global_scale"] = float(q.encode_scale.reshape(()))
            if mode == "static":
                amax = group_max(input_amax, n)
                if not (torch.isfinite(amax) and amax > 0):
                    raise ValueError(f"quantize_model: input amax of {n} is {float(amax)}; it must be finite and > 0")
                if recipe == "modelopt":
                    # ModelOpt: input_scale = amax.float() / (6 * 448), one fp32 division
                    layer.input_scale.copy_(amax.float() / GLOBAL_SCALE_RANGE)
                else:
                    # llm-compressor: input_global_scale from the observed amax in the activation dtype
                    enc = compressed_tensors_encode_scale(amax, dtype)
                    layer.input_scale.copy_(decode_scale_for_encode(enc))
                    encodes["input_global_scale"] = float(enc.reshape(()))
            if lin.bias is not None:
                layer.bias.copy_(lin.bias.detach().to(dtype))
        layer._refresh_derived()
        if encodes:
            setattr(layer, CT_ENCODE_ATTR, encodes)
        set_module(model, n, layer)
    invariant = install_invariant_modules(model) if batch_invariant else no_invariant_modules()
    setattr(model, MODEL_META_ATTR, {
        "recipe": recipe, "activation": mode, "ignore": list(ignore), "batch_invariant": bool(batch_invariant),
        "quantized": targets, **invariant,
    })
    return model
