"""quantize_model: convert the nn.Linear layers of a bf16 model to NvFp4Linear in place.

Fused shards (q/k/v, gate/up) share one weight amax, as ModelOpt (`preprocess_linear_fusion`) and llm-compressor
(fused observers) do, so they share one global scale (docs/recipes.md). Calibration batches give static input
scales (the max |input| each Linear saw, taken by forward pre-hooks; shards of one group see the same input and
share it too); without calibration, activations get per-token scales. The recipe is a checkpoint format's
(formats/): its weight bytes and its static input scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from . import formats
from .invariant_mode import install_invariant_modules, no_invariant_modules
from .linear import NvFp4Linear
from .checks import require_bool
from .module_tree import MODEL_META_ATTR, fused_group_of, matches_any, set_module
from .moe_quantize import ExpertsCalibration, experts_to_quantize, quantize_experts
from .progress import Progress
from .quantize import quantize


def _as_call(model: nn.Module, batch: Any) -> None:
    if isinstance(batch, Mapping):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(*batch)
    else:
        model(batch)


def _calibrate(model: nn.Module, names: list[str], calibration: Iterable[Any], progress: bool | None) -> dict[str, torch.Tensor]:
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
    shown = Progress(None, "quantize_model: calibration batches", enabled=progress)
    try:
        with torch.no_grad():
            for batch in calibration:
                _as_call(model, batch)
                batches += 1
                shown.update(batches)
    finally:
        shown.close()
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
    progress: bool | None = None,
) -> nn.Module:
    """Convert the nn.Linear layers of `model` (not matching `ignore`) to NvFp4Linear, in place; returns `model`.

    calibration: an iterable of model inputs (a tensor, a tuple of positional args or a dict of keyword args per
    batch); each Linear then gets a static input scale from the max |input| it saw. Without it, activations get
    per-token scales (not representable in the ModelOpt or compressed-tensors formats: save_pretrained refuses
    such a model). weight_only=True makes W4A16 layers (activation="none"). recipe: "modelopt" or
    "compressed-tensors" reproduces that tool's weight bytes. batch_invariant=True also replaces the remaining
    bf16 nn.Linear layers (lm_head) by nvfp4.invariant_ops.InvariantLinear.

    Each layer is quantized where its weight lives (a GPU model on its GPU), with the same bytes as on the CPU.
    progress: None shows progress on stderr once the work has taken a few seconds (a bar on a terminal, occasional
    lines otherwise), True always, False never.
    """
    fn = "quantize_model"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
    fmt = formats.get(recipe, f"{fn}: recipe")
    require_bool(fn, "batch_invariant", batch_invariant)
    require_bool(fn, "weight_only", weight_only)
    if progress is not None:
        require_bool(fn, "progress", progress)
    if isinstance(ignore, str):
        ignore = (ignore,)
    if not isinstance(ignore, Iterable):
        raise TypeError(f"{fn}: ignore must be module-name patterns (a str or an iterable of str), got "
                        f"{type(ignore).__name__}")
    ignore = tuple(ignore)
    if calibration is not None and (isinstance(calibration, (torch.Tensor, Mapping, str))
                                    or not isinstance(calibration, Iterable)):
        # a bare tensor would be iterated row by row, each row taken for a batch
        raise TypeError(f"{fn}: calibration must be an iterable of batches (e.g. a list of input tensors), got "
                        f"{type(calibration).__name__}; wrap a single batch in a list")
    bad = [p for p in ignore if not isinstance(p, str)]
    if bad:
        raise TypeError(f"{fn}: ignore must hold module-name patterns (str), got {bad[:3]}")
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
    experts = experts_to_quantize(model, ignore)  # mixture-of-experts layers (moe_quantize.py)
    experts_calibration = ExpertsCalibration(model, experts, recipe) if calibration is not None else None
    if experts_calibration is not None:
        with experts_calibration:
            input_amax = _calibrate(model, targets, calibration, progress)
    else:
        input_amax = None

    def group_max(values: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        return torch.stack([values[m] for m in fused_group_of(name, targets)]).amax()

    weight_amax = {n: model.get_submodule(n).weight.detach().abs().amax().float().cpu() for n in targets}
    mode = "none" if weight_only else ("static" if input_amax is not None else "per-token")
    shown = Progress(len(targets), "quantize_model: layers", enabled=progress)
    for done, n in enumerate(targets, 1):
        lin: nn.Linear = model.get_submodule(n)
        w = lin.weight.detach()
        dtype = w.dtype if w.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        q = quantize(w, amax=group_max(weight_amax, n), recipe=recipe)
        extras: dict[str, float] = {}
        if q.encode_scale is not None:
            extras["weight_global_scale"] = float(q.encode_scale.reshape(()))
        input_scale = None
        if mode == "static":
            amax = group_max(input_amax, n)
            if not (torch.isfinite(amax) and amax > 0):
                raise ValueError(f"quantize_model: input amax of {n} is {float(amax)}; it must be finite and > 0")
            input_scale, input_extras = fmt.input_scale(amax, dtype)
            extras.update(input_extras)
        layer = NvFp4Linear.from_quantized(q, bias=lin.bias, input_scale=input_scale, activation=mode,
                                           batch_invariant=batch_invariant, dtype=dtype, backend=backend)
        fmt.remember(layer, extras)
        set_module(model, n, layer)
        shown.update(done, n)
    shown.close()
    quantize_experts(model, experts, fmt, mode, experts_calibration, batch_invariant=batch_invariant, backend=backend)
    invariant = install_invariant_modules(model) if batch_invariant else no_invariant_modules()
    setattr(model, MODEL_META_ATTR, {
        "recipe": recipe, "activation": mode, "ignore": list(ignore), "batch_invariant": bool(batch_invariant),
        "quantized": targets + experts, **invariant,
    })
    return model
