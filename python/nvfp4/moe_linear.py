"""NvFp4GroupedLinear: one projection (gate, up or down) of all the experts of a mixture-of-experts layer, with the
experts' NVFP4 weights stacked.

State (state_dict form), for E experts of an N x K projection: `weight` uint8 [E, N, K/2], `weight_scale` e4m3
[E, N, K/16], `weight_scale_2` float32 [E], `input_scale` float32 [E] (activation="static" only). Index e of each
is exactly expert e's ModelOpt layer state, so a checkpoint's per-expert tensors are stacked and unstacked without
any conversion. As in NvFp4Linear, on a device with a kernel backend `weight` and `weight_scale` hold that backend's
runtime layout (each expert's `Backend.prepare`, stacked), made on load and `.to()` and reversed by state_dict().

The GEMM goes through the serving backend's `grouped_forward(layer, x_sorted, offsets)`: rows offsets[e] to
offsets[e+1] of x_sorted belong to expert e. Its default is one `Backend.forward` call per expert that has rows, on
`expert(e)`, a view of expert e that the backends read as they read an NvFp4Linear; a backend with a grouped kernel
(one launch for all experts) overrides it. Either way a row's result depends on its own values, its expert's
weights and the device type only: each per-expert call is row independent, like NvFp4Linear's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import backends
from .backends import Backend, NoKernelError
from .checks import ACTIVATION_DTYPES, require_dtype, require_tensor
from .format import BLOCK_SIZE
from .linear import ACTIVATION_MODES, _resolve_backend

# The layout the buffers hold when no kernel backend serves the device: the ModelOpt one.
_MODELOPT_LAYOUT = backends.get("reference")


class ExpertView:
    """Expert e of an NvFp4GroupedLinear with the attributes a backend's forward and a format's write_layer read
    from an NvFp4Linear: weight/weight_scale (runtime layout), weight_scale_2 and input_scale (0-d), bias (None),
    activation, batch_invariant, and state_dict() in ModelOpt form. Any other attribute set on it (a format's
    remembered encode scales) is kept per expert on the grouped layer, so it outlives the view."""

    _OWN = ("_group", "_index", "weight", "weight_scale", "weight_scale_2", "input_scale", "bias", "activation",
            "batch_invariant", "in_features", "out_features", "dtype")

    def __init__(self, group: "NvFp4GroupedLinear", index: int) -> None:
        own = object.__setattr__
        own(self, "_group", group)
        own(self, "_index", index)
        own(self, "weight", group.weight[index])
        own(self, "weight_scale", group.weight_scale[index])
        own(self, "weight_scale_2", group.weight_scale_2[index])
        own(self, "input_scale", None if group.input_scale is None else group.input_scale[index])
        own(self, "bias", None)
        for name in ("activation", "batch_invariant", "in_features", "out_features", "dtype"):
            own(self, name, getattr(group, name))

    def state_dict(self) -> dict[str, torch.Tensor]:
        w, s = self._group.expert_modelopt_weights(self._index)
        sd = {"weight": w, "weight_scale": s, "weight_scale_2": self.weight_scale_2}
        if self.input_scale is not None:
            sd["input_scale"] = self.input_scale
        return sd

    def __getattr__(self, name: str) -> Any:  # only called for attributes not set in __init__
        attrs = self._group._expert_attrs[self._index]
        if name in attrs:
            return attrs[name]
        raise AttributeError(f"expert {self._index} of {type(self._group).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            raise AttributeError(f"ExpertView.{name} is read only; load the grouped layer's state_dict instead")
        self._group._expert_attrs[self._index][name] = value


class NvFp4GroupedLinear(nn.Module):
    """E experts' N x K NVFP4 projections, stacked (module docstring). forward(x_sorted [S, K], offsets int64
    [E+1]) -> [S, N]: rows offsets[e]:offsets[e+1] go through expert e."""

    def __init__(
        self,
        num_experts: int,
        in_features: int,
        out_features: int,
        *,
        batch_invariant: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        activation: str = "per-token",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        fn = "NvFp4GroupedLinear"
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f"{fn}: num_experts must be an integer >= 1, got {num_experts}")
        if not isinstance(in_features, int) or in_features <= 0 or in_features % BLOCK_SIZE:
            raise ValueError(f"{fn}: in_features must be a positive multiple of {BLOCK_SIZE}, got {in_features}")
        if not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"{fn}: out_features must be an integer >= 1, got {out_features}")
        if dtype not in ACTIVATION_DTYPES:
            raise TypeError(f"{fn}: dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        if activation not in ACTIVATION_MODES:
            raise ValueError(f"{fn}: activation must be one of {ACTIVATION_MODES}, got {activation!r}")
        if backend not in backends.BACKEND_NAMES:
            raise ValueError(f"{fn}: backend must be one of {backends.BACKEND_NAMES}, got {backend!r}")
        self.num_experts, self.in_features, self.out_features = num_experts, in_features, out_features
        self.batch_invariant, self.activation, self.backend, self.dtype = bool(batch_invariant), activation, backend, dtype
        e, n, k = num_experts, out_features, in_features
        self.register_buffer("weight", torch.zeros((e, n, k // 2), dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.ones((e, n, k // BLOCK_SIZE), device=device).to(torch.float8_e4m3fn))
        self.register_buffer("weight_scale_2", torch.ones((e,), dtype=torch.float32, device=device))
        if activation == "static":
            self.register_buffer("input_scale", torch.ones((e,), dtype=torch.float32, device=device))
        else:
            self.input_scale = None
        self.bias = None  # the supported expert families have no expert biases
        self._expert_attrs: list[dict[str, Any]] = [{} for _ in range(e)]
        self._layout = _MODELOPT_LAYOUT.name
        self._adopt_device_layout()

    def _state_layout(self) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        e, n, k = self.num_experts, self.out_features, self.in_features
        return {"weight": (torch.uint8, (e, n, k // 2)), "weight_scale": (torch.float8_e4m3fn, (e, n, k // BLOCK_SIZE)),
                "weight_scale_2": (torch.float32, (e,)), "input_scale": (torch.float32, (e,))}

    # --- experts ------------------------------------------------------------------------------------------------

    def expert(self, index: int) -> ExpertView:
        """Expert `index`, read by backends as an NvFp4Linear (ExpertView)."""
        if not 0 <= index < self.num_experts:
            raise IndexError(f"NvFp4GroupedLinear.expert: index must be in [0, {self.num_experts}), got {index}")
        return ExpertView(self, index)

    # --- runtime layout (as NvFp4Linear's) ------------------------------------------------------------------------

    def modelopt_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight uint8 [E, N, K/2], weight_scale e4m3 [E, N, K/16]) in the ModelOpt layout, on the layer's device."""
        if self._layout == _MODELOPT_LAYOUT.name:
            return self.weight, self.weight_scale
        pairs = [self.expert_modelopt_weights(e) for e in range(self.num_experts)]
        return torch.stack([w for w, _ in pairs]), torch.stack([s for _, s in pairs])

    def expert_modelopt_weights(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert `index`'s (weight uint8 [N, K/2], weight_scale e4m3 [N, K/16]) in the ModelOpt layout."""
        if self._layout == _MODELOPT_LAYOUT.name:
            return self.weight[index], self.weight_scale[index]
        return backends.get(self._layout).unprepare(self.weight[index], self.weight_scale[index], self.out_features,
                                                    self.in_features)

    def _to_layout(self, backend: Backend) -> None:
        if self._layout == backend.name:
            return
        with torch.no_grad():
            w, s = self.modelopt_weights()
            pairs = [backend.prepare(w[e], s[e]) for e in range(self.num_experts)]
            self.weight, self.weight_scale = torch.stack([p for p, _ in pairs]), torch.stack([q for _, q in pairs])
        self._layout = backend.name

    def _adopt_device_layout(self) -> None:
        try:
            backend = backends.get(self.resolved_backend())
        except NoKernelError:
            backend = _MODELOPT_LAYOUT  # forward raises the NoKernelError
        self._to_layout(backend)

    def resolved_backend(self, device: torch.device | None = None) -> str:
        """Name of the backend that serves this layer on `device` (default: where its weights are)."""
        device = self.weight.device if device is None else device
        return _resolve_backend(device.type, device.index, self.batch_invariant, self.backend)

    def _apply(self, fn, recurse: bool = True):
        self._to_layout(_MODELOPT_LAYOUT)
        super()._apply(fn, recurse)
        self._adopt_device_layout()
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._layout != _MODELOPT_LAYOUT.name:
            destination[prefix + "weight"], destination[prefix + "weight_scale"] = self.modelopt_weights()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # load_state_dict would cast silently (fp32 values into e4m3 get re-rounded): validate first.
        fn = "NvFp4GroupedLinear.load_state_dict"
        for name, (dtype, shape) in self._state_layout().items():
            key = prefix + name
            if key not in state_dict:
                continue
            if name == "input_scale" and self.input_scale is None:
                raise ValueError(f"{fn}: state_dict has {key} but the layer was built with activation="
                                 f"{self.activation!r}; build it with activation='static' to use calibrated input scales")
            require_dtype(fn, key, state_dict[key], (dtype,))
            if tuple(state_dict[key].shape) != shape:
                raise ValueError(f"{fn}: {key} must have shape {shape}, got {tuple(state_dict[key].shape)}")
        self._to_layout(_MODELOPT_LAYOUT)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self._adopt_device_layout()

    # --- forward --------------------------------------------------------------------------------------------------

    def forward(self, x_sorted: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        fn = "NvFp4GroupedLinear.forward"
        require_tensor(fn, "x_sorted", x_sorted)
        require_dtype(fn, "x_sorted", x_sorted, ACTIVATION_DTYPES)
        if x_sorted.dim() != 2 or x_sorted.shape[1] != self.in_features:
            raise ValueError(f"{fn}: x_sorted must have shape [rows, {self.in_features}], got {tuple(x_sorted.shape)}")
        if x_sorted.device != self.weight.device:
            raise ValueError(f"{fn}: x_sorted is on {x_sorted.device} but the layer's weights are on {self.weight.device}")
        require_tensor(fn, "offsets", offsets)
        if offsets.dtype != torch.int64 or tuple(offsets.shape) != (self.num_experts + 1,):
            raise ValueError(f"{fn}: offsets must be int64 of shape ({self.num_experts + 1},) (expert e's rows are "
                             f"offsets[e]:offsets[e+1]), got {offsets.dtype} {tuple(offsets.shape)}")
        if x_sorted.shape[0] == 0:
            return x_sorted.new_empty((0, self.out_features))
        x_sorted = x_sorted.contiguous()
        backend = backends.get(self.resolved_backend(x_sorted.device))
        if backend.name != self._layout:
            raise RuntimeError(  # pragma: no cover - every layout change goes through _adopt_device_layout
                f"{fn}: the weights are in the {self._layout} layout but {backend.name} serves {x_sorted.device}")
        return backend.grouped_forward(self, x_sorted, offsets)

    def extra_repr(self) -> str:
        try:
            backend = self.resolved_backend()
        except Exception as exc:  # the repr must not raise; say why no kernel serves
            backend = f"unavailable ({type(exc).__name__})"
        mode = "batch-invariant" if self.batch_invariant else "fast"
        return (f"num_experts={self.num_experts}, in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation}, mode={mode}, backend={backend}")
