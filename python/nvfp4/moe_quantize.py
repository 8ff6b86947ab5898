"""quantize_model for mixture-of-experts layers: transformers' fused experts modules become NvFp4Experts with the
weight bytes of a checkpoint format's recipe, and, with calibration batches, the static input scales of that tool.

Weights (both tools, tests/fixtures/README.md): every expert projection is quantized on its own with the format's
recipe (formats/*.quantize_weight); gate and up of one expert share one amax, the max over the fused
`gate_up_proj[e]` (ModelOpt calibrates the fused slice, llm-compressor links the two observers), down has its own.

Input scales follow how each tool calibrates experts (read in ModelOpt 0.47.0 `_QuantFusedExperts` and
llm-compressor 0.14.0.1 `LinearExperts2D.forward` with `moe_calibrate_all_experts=True`, its default):
- ModelOpt: one input quantizer per projection shared by all experts of the layer, fed by the tokens routed to each
  expert: gate/up amax = max |x| over the tokens routed anywhere, down amax = max |act(gate) * up| over the routed
  (token, expert) pairs; every expert stores the same input_scale.
- llm-compressor: every token goes through every expert during calibration and each expert Linear has its own
  observer: gate/up amax = max |x| over all tokens (the same for all experts), down amax per expert over all tokens.
The intermediate activations are recomputed from the bf16 weights in a forward pre-hook on the experts module,
with the experts module's own ops (F.linear on `gate_up_proj[e]`, chunk, act_fn, product).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .module_tree import matches_any, set_module
from .moe import PROJECTIONS, NvFp4Experts
from .moe_checkpoint import experts_shape, fused_experts_modules, linear_standin, projection_names
from .quantize import quantize

# Whether a tool sends every calibration token through every expert (else only the routed ones), and whether all
# experts of a layer share one input scale per projection (else one per expert Linear). Module docstring.
CALIBRATE_ALL_EXPERTS = {"modelopt": False, "compressed-tensors": True}
SHARED_INPUT_SCALE = {"modelopt": True, "compressed-tensors": False}


def experts_to_quantize(model: nn.Module, ignore: Iterable[str]) -> list[str]:
    """Names of the fused experts modules that `ignore` leaves to quantize. A pattern that matches some expert
    projections of a module but not all is refused: the experts of a layer are one NVFP4 module or none."""
    names = []
    standin = linear_standin()
    for name, module in fused_experts_modules(model):
        e, _, _ = experts_shape(name, module)
        hits = [matches_any(n, ignore, standin, suffix=True) for _, _, n in projection_names(name, e)]
        if matches_any(name, ignore, module, suffix=True) or all(hits):
            continue
        if any(hits):
            raise ValueError(f"quantize_model: ignore matches only some expert projections of {name}; ignore all "
                             f"of them (e.g. the module name) or none")
        names.append(name)
    return names


class ExpertsCalibration:
    """Forward pre-hooks on the experts modules `names` that record each expert's input amaxes the way `recipe`'s
    tool does (module docstring) while quantize_model's calibration batches run; `amax[name][proj]` is a float32
    tensor [E] (0 for an expert no token reached)."""

    def __init__(self, model: nn.Module, names: list[str], recipe: str) -> None:
        self.model, self.names = model, names
        self.all_experts = CALIBRATE_ALL_EXPERTS[recipe]
        self.amax: dict[str, dict[str, torch.Tensor]] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "ExpertsCalibration":
        for name in self.names:
            self._handles.append(self.model.get_submodule(name).register_forward_pre_hook(self._hook_for(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook_for(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            hidden, top_k_index = args[0].detach(), args[1]
            e = module.gate_up_proj.shape[0]
            stats = self.amax.setdefault(name, {p: torch.zeros(e) for p in PROJECTIONS})
            with torch.no_grad():
                for expert in range(e):
                    if self.all_experts:
                        x = hidden
                    else:
                        x = hidden[(top_k_index == expert).any(-1)]
                    if x.shape[0] == 0:
                        continue
                    gate, up = F.linear(x, module.gate_up_proj[expert]).chunk(2, dim=-1)
                    inner = module.act_fn(gate) * up
                    for proj, value in (("gate_proj", x), ("up_proj", x), ("down_proj", inner)):
                        stats[proj][expert] = torch.maximum(stats[proj][expert], value.abs().amax().float().cpu())

        return hook

    def input_amax(self, name: str, proj: str) -> torch.Tensor:
        """float32 [E]: each expert's input amax for `proj`, as its tool would store it."""
        if name not in self.amax:
            raise ValueError(f"quantize_model: calibration never reached {name}, so its experts have no input scale")
        amax = self.amax[name][proj]
        return amax.max().expand(amax.shape).clone() if not self.all_experts else amax


def quantize_experts(
    model: nn.Module,
    names: list[str],
    fmt: ModuleType,
    mode: str,
    calibration: ExpertsCalibration | None,
    *,
    batch_invariant: bool,
    backend: str,
) -> None:
    """Replace each fused experts module `names` of `model` by NvFp4Experts with `fmt`'s recipe (module docstring);
    mode is quantize_model's activation mode ("static" needs `calibration`)."""
    shared = SHARED_INPUT_SCALE[fmt.NAME]
    for name in names:
        module = model.get_submodule(name)
        e, h, i = experts_shape(name, module)
        dtype = module.gate_up_proj.dtype if module.gate_up_proj.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        state: dict[str, list[torch.Tensor]] = {}
        remembered: list[tuple[str, int, dict[str, float]]] = []
        input_amax = {p: calibration.input_amax(name, p) for p in PROJECTIONS} if mode == "static" else None
        for expert in range(e):
            gate_up, down = module.gate_up_proj[expert].detach(), module.down_proj[expert].detach()
            weights = {"gate_proj": (gate_up[:i], gate_up.abs().amax()), "up_proj": (gate_up[i:], gate_up.abs().amax()),
                       "down_proj": (down, down.abs().amax())}
            for proj, (w, amax) in weights.items():
                q = quantize(w, amax=amax.float(), recipe=fmt.NAME)
                extras: dict[str, float] = {}
                if q.encode_scale is not None:
                    extras["weight_global_scale"] = float(q.encode_scale.reshape(()))
                entries = {"weight": q.data, "weight_scale": q.scale, "weight_scale_2": q.global_scale.float().reshape(())}
                if input_amax is not None:
                    amax_in = input_amax[proj][expert]
                    if not (torch.isfinite(amax_in) and amax_in > 0):
                        reached = "any expert" if shared else f"expert {expert}"
                        raise ValueError(f"quantize_model: calibration never reached {reached} of {name} ({proj} input "
                                         f"amax {float(amax_in)}), so it has no input scale")
                    entries["input_scale"], input_extras = fmt.input_scale(amax_in, dtype)
                    extras.update(input_extras)
                for key, value in entries.items():
                    state.setdefault(f"{proj}.{key}", []).append(value)
                remembered.append((proj, expert, extras))
        layer = NvFp4Experts(e, h, i, act_fn=module.act_fn, batch_invariant=batch_invariant,
                             device=module.gate_up_proj.device, dtype=dtype, activation=mode, backend=backend)
        layer.load_state_dict({k: torch.stack(v) for k, v in state.items()})
        for proj, expert, extras in remembered:
            fmt.remember(getattr(layer, proj).expert(expert), extras)
        set_module(model, name, layer)
