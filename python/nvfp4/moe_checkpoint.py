"""Mixture-of-experts experts in checkpoints: reading them into NvFp4Experts and writing them back, through the
checkpoint format modules (formats/), expert by expert.

transformers (5.x) holds the routed experts of a layer as one module with fused 3-D parameters (`gate_up_proj`
[E, 2I, H], `down_proj` [E, H, I]); ModelOpt and llm-compressor both write them per expert, as if each were three
nn.Linear layers `<module>.<e>.gate_proj`, `<module>.<e>.up_proj` and `<module>.<e>.down_proj` with the usual
per-layer tensors of their format (tests/fixtures/README.md). So each expert projection is read with the format's
read_layer (the same validation and encode -> decode rule as a Linear), stacked into NvFp4GroupedLinear state, and
written back with write_layer from `expert(e)`. A model whose config leaves the experts unquantized gets its bf16
per-expert weights fused into the module's parameters (gate and up concatenated), as transformers' loader does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import torch
from torch import nn

from .formats import UNSUPPORTED_SUFFIXES, QuantSpec, UnsupportedCheckpointError
from .formats.base import dtype_name
from .format import BLOCK_SIZE
from .module_tree import set_module
from .moe import EXPERTS_CLASSES, PROJECTIONS, NvFp4Experts

_FN = "nvfp4.from_pretrained"


def fused_experts_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every transformers experts module of an allowlisted class (moe.EXPERTS_CLASSES)."""
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ in EXPERTS_CLASSES]


def experts_shape(name: str, module: nn.Module) -> tuple[int, int, int]:
    """(num_experts, hidden_size, intermediate_size) of a fused experts module, from its parameters."""
    gate_up, down = module.gate_up_proj, module.down_proj
    e, two_i, h = gate_up.shape
    if two_i % 2 or tuple(down.shape) != (e, h, two_i // 2):
        raise ValueError(f"{name}: expected gate_up_proj [E, 2I, H] and down_proj [E, H, I], got "
                         f"{tuple(gate_up.shape)} and {tuple(down.shape)}")
    return e, h, two_i // 2


def projection_names(name: str, num_experts: int) -> list[tuple[int, str, str]]:
    """(expert, projection, on-disk layer name) of every expert projection of the module `name`."""
    return [(e, p, f"{name}.{e}.{p}") for e in range(num_experts) for p in PROJECTIONS]


_LINEAR_STANDIN: nn.Module | None = None


def linear_standin() -> nn.Module:
    """An nn.Linear to match class-name patterns ("Linear" in compressed-tensors targets) against an expert
    projection: the tools quantize each expert projection as a Linear."""
    global _LINEAR_STANDIN
    if _LINEAR_STANDIN is None:
        _LINEAR_STANDIN = nn.Linear(BLOCK_SIZE, 1, bias=False, device="meta")
    return _LINEAR_STANDIN


@dataclass
class ExpertsLoad:
    consumed: set[str] = field(default_factory=set)  # checkpoint keys read into experts modules
    quantized: list[str] = field(default_factory=list)  # experts modules now NvFp4Experts
    unquantized: list[str] = field(default_factory=list)  # experts modules loaded in bf16 from per-expert tensors


def load_experts(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    fmt: ModuleType,
    spec: QuantSpec,
    should_quantize: Callable[[str, nn.Module], bool],
    *,
    batch_invariant: bool,
    dtype: torch.dtype,
    backend: str,
) -> ExpertsLoad:
    """Load the experts modules of `model` from per-expert checkpoint tensors; quantized ones become NvFp4Experts.
    should_quantize(layer name, module) is the loader's reading of the config's targets and ignore lists."""
    done = ExpertsLoad()
    standin = linear_standin()
    for name, module in fused_experts_modules(model):
        e, h, i = experts_shape(name, module)
        layers = projection_names(name, e)
        want = [should_quantize(n, standin) for _, _, n in layers]
        have = [fmt.is_quantized_on_disk(n, tensors) for _, _, n in layers]
        if all(want) and all(have):
            layer, consumed = _read_quantized(module, name, layers, tensors, fmt, spec, e, h, i,
                                              batch_invariant=batch_invariant, dtype=dtype, backend=backend)
            set_module(model, name, layer)
            done.quantized.append(name)
        elif not any(want) and not any(have):
            consumed = _read_unquantized(module, name, layers, tensors)
            if not consumed:
                continue  # fused 3-D tensors on disk: the model's own load_state_dict reads them
            done.unquantized.append(name)
        else:
            for (_, _, n), w, c in zip(layers, want, have):
                if w and not c:
                    raise TypeError(f"{_FN}: {n} should be NVFP4 per the config ({spec.description}) but the "
                                    f"checkpoint holds no quantized tensors for it")
                if c and not w:
                    raise ValueError(f"{_FN}: {n} holds NVFP4 tensors but the config excludes it from quantization "
                                     f"(ignore={spec.ignore}); refusing to guess")
            # config and checkpoint agree, but on a mix: one module holds all its experts in NVFP4 or none
            n = next(n for (_, _, n), w in zip(layers, want) if not w)
            raise UnsupportedCheckpointError(f"{_FN}: {name} has quantized and unquantized expert projections (e.g. "
                                             f"{n} is not quantized); experts are loaded all NVFP4 or all bf16")
        done.consumed |= consumed
    return done


def _checked(n: str, key: str, t: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if t.dtype != dtype:
        raise TypeError(f"{_FN}: {n}.{key} must be {str(dtype).replace('torch.', '')}, got {dtype_name(t)}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{_FN}: {n}.{key} must have shape {shape} for this model, got {tuple(t.shape)}")
    return t


def _read_quantized(module, name, layers, tensors, fmt, spec, e, h, i, *, batch_invariant, dtype, backend):
    stacks: dict[str, list[torch.Tensor]] = {}
    remembered: list[tuple[int, str, dict[str, float]]] = []
    consumed: set[str] = set()
    for index, proj, n in layers:
        own = {k: tensors[f"{n}.{k}"] for k in fmt.LAYER_KEYS if f"{n}.{k}" in tensors}
        bad = [s for s in UNSUPPORTED_SUFFIXES if f"{n}.{s}" in tensors]
        if bad:
            raise UnsupportedCheckpointError(f"{_FN}: {n} has {bad}: AWQ/SVDQuant/zero-point variants are not supported")
        try:
            sd, extras = fmt.read_layer(n, own, spec.activation)
        except KeyError as exc:
            raise ValueError(f"{_FN}: {n}.{exc.args[0]} is missing") from None
        if "bias" in sd:
            raise UnsupportedCheckpointError(f"{_FN}: {n}.bias: expert biases are not supported")
        rows, cols = (i, h) if proj != "down_proj" else (h, i)
        # LAYER_KEYS[0] is the format's name of the packed weight (weight / weight_packed)
        _checked(n, fmt.LAYER_KEYS[0], sd["weight"], torch.uint8, (rows, cols // 2))
        _checked(n, "weight_scale", sd["weight_scale"], torch.float8_e4m3fn, (rows, cols // BLOCK_SIZE))
        for key, value in sd.items():
            stacks.setdefault(f"{proj}.{key}", []).append(value)
        remembered.append((index, proj, extras))
        consumed.update(f"{n}.{k}" for k in own)
    layer = NvFp4Experts(e, h, i, act_fn=module.act_fn, batch_invariant=batch_invariant, device="cpu", dtype=dtype,
                         activation=spec.activation, backend=backend)
    try:
        layer.load_state_dict({k: torch.stack(v) for k, v in stacks.items()}, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise type(exc)(f"{_FN}: {name}: {exc}") from exc
    for index, proj, extras in remembered:
        fmt.remember(getattr(layer, proj).expert(index), extras)
    return layer, consumed


def _read_unquantized(module, name, layers, tensors) -> set[str]:
    keys = [f"{n}.weight" for _, _, n in layers]
    present = [k for k in keys if k in tensors]
    if not present:
        return set()
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise ValueError(f"{_FN}: tensors missing from the checkpoint: {missing[:8]}")
    weights = {(index, proj): tensors[f"{n}.weight"] for index, proj, n in layers}
    for (index, proj), w in weights.items():
        if not w.is_floating_point() or w.dtype == torch.float8_e4m3fn:
            raise UnsupportedCheckpointError(f"{_FN}: {name}.{index}.{proj}.weight is {dtype_name(w)} but the config "
                                             f"leaves it unquantized")
    e = module.gate_up_proj.shape[0]
    with torch.no_grad():
        gate_up = torch.stack([torch.cat([weights[(x, "gate_proj")], weights[(x, "up_proj")]]) for x in range(e)])
        down = torch.stack([weights[(x, "down_proj")] for x in range(e)])
        for param, value, what in ((module.gate_up_proj, gate_up, "gate_up_proj"), (module.down_proj, down, "down_proj")):
            if value.shape != param.shape:
                raise ValueError(f"{_FN}: {name}.{what}: the per-expert tensors make {tuple(value.shape)}, the model "
                                 f"expects {tuple(param.shape)}")
            param.data = value.to(param.dtype)
    return set(keys)


def quantized_experts(model: nn.Module) -> dict[str, NvFp4Experts]:
    return {n: m for n, m in model.named_modules() if isinstance(m, NvFp4Experts)}


def write_experts(name: str, experts: NvFp4Experts, fmt: ModuleType, static: bool) -> dict[str, torch.Tensor]:
    """Checkpoint key -> tensor for every expert projection, in the format's names and dtypes."""
    out: dict[str, torch.Tensor] = {}
    for proj, layer in experts.projections().items():
        for index in range(experts.num_experts):
            for key, value in fmt.write_layer(layer.expert(index), static).items():
                out[f"{name}.{index}.{proj}.{key}"] = value
    return out
