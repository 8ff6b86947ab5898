"""NvFp4Linear: a Linear layer with NVFP4 weights (and optionally NVFP4 activations) and a batch-invariant mode.

The layer holds the ModelOpt-form state (weight, weight_scale, weight_scale_2, input_scale, bias) and delegates the
work to the backend that serves its device (backends/). On a device with a kernel backend, the weight and
weight_scale buffers hold that backend's runtime layout, made when the state or the device changes (load,
construction, .to()) and reversed exactly by state_dict(): one copy of the weights stays resident.
"""

from __future__ import annotations

import torch
from torch import nn

from . import backends
from .backends import Backend, NoKernelError
from .checks import (
    ACTIVATION_DTYPES, require_block_scales, require_bool, require_dtype, require_global_scale, require_int,
    require_tensor,
)
from .format import BLOCK_SIZE, GLOBAL_SCALE_RANGE
from .formats.base import divide_by
from .quantize import quantize
from .tensor import NvFp4Tensor

# "static": calibrated input_scale (ModelOpt NVFP4); "per-token": each row's own global scale (no input_scale);
# "none": W4A16, activations stay bf16/fp16 (ModelOpt W4A16_NVFP4, compressed-tensors NVFP4A16).
ACTIVATION_MODES = ("static", "per-token", "none")

# state_dict entry -> (dtype, shape builder from (N, K))
_STATE_LAYOUT = {
    "weight": (torch.uint8, lambda n, k: (n, k // 2)),
    "weight_scale": (torch.float8_e4m3fn, lambda n, k: (n, k // BLOCK_SIZE)),
    "weight_scale_2": (torch.float32, lambda n, k: ()),
    "input_scale": (torch.float32, lambda n, k: ()),
}

# The quantized state: bytes that casts must never touch (they only move with the device).
QUANTIZED_BUFFERS = ("weight", "weight_scale", "weight_scale_2", "input_scale")
GLOBAL_SCALES = ("weight_scale_2", "input_scale")


class CastError(TypeError):
    """A dtype cast NvFp4Linear cannot serve (its kernels take and give bfloat16 or float16 activations)."""


# The layout the buffers hold when no kernel backend serves the device: the ModelOpt one.
_MODELOPT_LAYOUT = backends.get("reference")


# The hardware -> backend decision is a constant for a device; torch.compile bakes it in at trace time instead of
# tracing the library queries (ctypes) behind it.
@torch.compiler.assume_constant_result
def _resolve_backend(device_type: str, device_index: int | None, batch_invariant: bool, backend: str) -> str:
    device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
    return backends.select(device_type, backends.device_capability(device), batch_invariant=batch_invariant,
                           backend=backend).name


class NvFp4Linear(nn.Module):
    """y = x W^T + b with W in NVFP4 (ModelOpt state_dict layout).

    batch_invariant=True promises that each output row depends only on its own input row, the weights and the
    device type, bitwise, whatever the batch holds. Activations are then quantized per row (static or per-token
    global scale); a batch-wide dynamic scale is never used. backend: "auto" picks the compiled kernel for the
    device and raises if there is none; "reference" runs the (slow) reference math on any device.

    The weight and weight_scale buffers hold the serving backend's runtime layout; read the ModelOpt-form tensors
    with state_dict() or modelopt_weights().
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        batch_invariant: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        activation: str = "per-token",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        fn = "NvFp4Linear"
        require_int(fn, "in_features", in_features)
        if in_features <= 0 or in_features % BLOCK_SIZE:
            raise ValueError(f"{fn}: in_features must be a positive multiple of {BLOCK_SIZE}, got {in_features}")
        require_int(fn, "out_features", out_features, minimum=1)
        require_bool(fn, "bias", bias)
        require_bool(fn, "batch_invariant", batch_invariant)
        if dtype not in ACTIVATION_DTYPES:
            raise TypeError(f"{fn}: dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        if activation not in ACTIVATION_MODES:
            raise ValueError(f"{fn}: activation must be one of {ACTIVATION_MODES}, got {activation!r}")
        if backend not in backends.BACKEND_NAMES:
            raise ValueError(f"{fn}: backend must be one of {backends.BACKEND_NAMES}, got {backend!r}")
        self.in_features, self.out_features = in_features, out_features
        self.batch_invariant, self.activation, self.backend, self.dtype = bool(batch_invariant), activation, backend, dtype
        n, k = out_features, in_features
        self.register_buffer("weight", torch.zeros((n, k // 2), dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.ones((n, k // BLOCK_SIZE), device=device).to(torch.float8_e4m3fn))
        self.register_buffer("weight_scale_2", torch.ones((), dtype=torch.float32, device=device))
        if activation == "static":
            self.register_buffer("input_scale", torch.ones((), dtype=torch.float32, device=device))
        else:
            self.input_scale = None
        self.bias = nn.Parameter(torch.zeros(n, dtype=dtype, device=device), requires_grad=False) if bias else None
        self._layout = _MODELOPT_LAYOUT.name  # the backend whose runtime layout weight/weight_scale hold
        self._adopt_device_layout()

    # --- construction ------------------------------------------------------------------------------------------

    @classmethod
    def from_quantized(
        cls,
        q: NvFp4Tensor,
        *,
        bias: torch.Tensor | None = None,
        input_scale: torch.Tensor | float | None = None,
        activation: str | None = None,
        batch_invariant: bool = False,
        dtype: torch.dtype = torch.bfloat16,
        backend: str = "auto",
    ) -> "NvFp4Linear":
        """A layer holding quantized weights q (on q's device). input_scale: the static decode input scale
        (activation="static"); without it activations get per-token scales (or pass activation="none")."""
        fn = "NvFp4Linear.from_quantized"
        if not isinstance(q, NvFp4Tensor):
            raise TypeError(f"{fn}: q must be an NvFp4Tensor, got {type(q).__name__}")
        for name in ("data", "scale", "global_scale"):
            require_tensor(fn, f"q.{name}", getattr(q, name))
        if q.data.dim() != 2:
            raise ValueError(f"{fn}: q.data must be 2-D [N, K/2], got shape {tuple(q.data.shape)}")
        if bias is not None:
            require_tensor(fn, "bias", bias)
        if input_scale is not None:
            input_scale = _scalar_argument(fn, "input_scale", input_scale)
        mode = activation or ("static" if input_scale is not None else "per-token")
        if (mode == "static") != (input_scale is not None):
            raise ValueError(f"NvFp4Linear.from_quantized: input_scale is given exactly when activation='static' "
                             f"(activation={mode!r}, input_scale={'given' if input_scale is not None else 'None'})")
        n, k = q.shape
        layer = cls(k, n, bias is not None, batch_invariant=batch_invariant, device=q.data.device, dtype=dtype,
                    activation=mode, backend=backend)
        sd = {"weight": q.data, "weight_scale": q.scale, "weight_scale_2": q.global_scale}
        if input_scale is not None:
            sd["input_scale"] = input_scale
        if bias is not None:
            sd["bias"] = bias.detach().to(dtype)
        layer.load_state_dict(sd)
        return layer

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        input_amax: float | torch.Tensor | None = None,
        batch_invariant: bool = False,
        recipe: str = "modelopt",
        activation: str | None = None,
        backend: str = "auto",
    ) -> "NvFp4Linear":
        """Quantize an nn.Linear. input_amax (calibrated |x| max) gives a static input scale; without it activations
        get per-token scales (or pass activation="none" for W4A16)."""
        fn = "NvFp4Linear.from_linear"
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{fn}: linear must be an nn.Linear, got {type(linear).__name__}")
        mode = activation or ("static" if input_amax is not None else "per-token")
        if mode == "static" and input_amax is None:
            raise ValueError(f"{fn}: activation='static' needs input_amax")
        if mode != "static" and input_amax is not None:
            raise ValueError(f"{fn}: input_amax is only used with activation='static', got activation={mode!r}")
        w = linear.weight.detach()
        dtype = w.dtype if w.dtype in ACTIVATION_DTYPES else torch.bfloat16
        input_scale = None
        if mode == "static":
            amax = _scalar_argument(fn, "input_amax", input_amax)
            if not (torch.isfinite(amax) and amax > 0):
                raise ValueError(f"{fn}: input_amax must be finite and > 0, got {amax.item()}")
            input_scale = divide_by(amax, GLOBAL_SCALE_RANGE)  # the same fp32 division on every device
        return cls.from_quantized(quantize(w, recipe=recipe), bias=linear.bias, input_scale=input_scale, activation=mode,
                                  batch_invariant=batch_invariant, dtype=dtype, backend=backend)

    # --- runtime layout ----------------------------------------------------------------------------------------

    def _to_layout(self, backend: Backend) -> None:
        """Makes weight/weight_scale hold `backend`'s runtime layout (through the ModelOpt layout)."""
        if self._layout == backend.name:
            return
        with torch.no_grad():
            w, s = self.modelopt_weights()
            self.weight, self.weight_scale = backend.prepare(w, s)
        self._layout = backend.name

    def _adopt_device_layout(self) -> None:
        """The layout of the backend that serves the buffers' device (the ModelOpt layout when none does)."""
        try:
            backend = backends.get(self.resolved_backend())
        except NoKernelError:
            backend = _MODELOPT_LAYOUT  # forward raises the NoKernelError
        self._to_layout(backend)

    def modelopt_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight uint8 [N, K/2], weight_scale e4m3 [N, K/16]) in the ModelOpt layout, on the layer's device."""
        if self._layout == _MODELOPT_LAYOUT.name:
            return self.weight, self.weight_scale
        return backends.get(self._layout).unprepare(self.weight, self.weight_scale, self.out_features, self.in_features)

    def _apply(self, fn, recurse: bool = True):
        # Every Module cast and move (.to, .half, .float, .type, .cuda, .cpu, ...) arrives here as a function applied
        # to each tensor. A probe tensor of the activation dtype tells what it does to floating tensors: the bias and
        # the activation dtype follow it; a dtype the kernels cannot serve is refused before anything changes. The
        # quantized buffers only move: they pass through fn viewed as integers of their width (no cast touches
        # integers except .type(), for which they are moved to fn's device instead), so their bytes never change.
        probe = fn(torch.empty(0, dtype=self.dtype, device=self.weight.device))
        if probe.dtype != self.dtype:
            self._check_cast(probe.dtype)
        self._to_layout(_MODELOPT_LAYOUT)
        try:
            moved = {id(t): _move_bytes(fn, t) for name in QUANTIZED_BUFFERS
                     if (t := self._buffers.get(name)) is not None}
            super()._apply(lambda t: moved[id(t)] if id(t) in moved else fn(t), recurse)
            self.dtype = probe.dtype
        finally:
            self._adopt_device_layout()
        return self

    def _check_cast(self, dtype: torch.dtype) -> None:
        if dtype in ACTIVATION_DTYPES:
            return
        raise CastError(
            f"NvFp4Linear: cannot cast the layer to {dtype}: its kernels take and give bfloat16 or float16 activations "
            f"(the quantized weights and scales keep their own dtypes under every cast). The layer is unchanged "
            f"({self.dtype}). In a whole-model cast (model.float(), model.double(), model.to(dtype)) torch has already "
            f"cast the modules it visited before this one: cast the model to bfloat16 or float16 instead."
        )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._layout != _MODELOPT_LAYOUT.name:
            w, s = self.modelopt_weights()
            destination[prefix + "weight"], destination[prefix + "weight_scale"] = w, s

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # load_state_dict would silently cast (fp32 values into an e4m3 buffer get re-rounded): validate first.
        fn = "NvFp4Linear.load_state_dict"
        n, k = self.out_features, self.in_features
        for name, (dtype, shape_of) in _STATE_LAYOUT.items():
            key = prefix + name
            if key not in state_dict:
                continue
            value = state_dict[key]
            require_tensor(fn, key, value)
            if name == "input_scale" and self.input_scale is None:
                raise ValueError(
                    f"NvFp4Linear: state_dict has {key} but the layer was built with activation={self.activation!r}; "
                    f"build it with activation='static' to use a calibrated input scale"
                )
            scalar = name in GLOBAL_SCALES
            allowed = (dtype, torch.bfloat16) if scalar else (dtype,)  # some ModelOpt exports carry bf16 scalars
            require_dtype(fn, key, value, allowed)
            if scalar:
                require_global_scale(fn, key, value)
                state_dict[key] = value.detach().float().reshape(())
                continue
            expected = shape_of(n, k)
            if tuple(value.shape) != expected:
                raise ValueError(f"{fn}: {key} must have shape {expected}, got {tuple(value.shape)}")
            if name == "weight_scale":
                require_block_scales(fn, key, value)
        key = prefix + "bias"
        if key in state_dict:
            bias = require_tensor(fn, key, state_dict[key])
            if self.bias is None:
                raise ValueError(f"{fn}: state_dict has {key} but the layer was built with bias=False")
            if not bias.is_floating_point() or bias.dtype.itemsize == 1:
                raise TypeError(f"{fn}: {key} must be a floating-point tensor (it is cast to the layer's {self.dtype}), "
                                f"got {bias.dtype}")
            if tuple(bias.shape) != (n,):
                raise ValueError(f"{fn}: {key} must have shape ({n},), got {tuple(bias.shape)}")
        self._to_layout(_MODELOPT_LAYOUT)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self._adopt_device_layout()

    # --- forward -----------------------------------------------------------------------------------------------

    def resolved_backend(self, device: torch.device | None = None) -> str:
        """Name of the backend that serves this layer on `device` (default: where its weights are)."""
        device = self.weight.device if device is None else device
        return _resolve_backend(device.type, device.index, self.batch_invariant, self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = "NvFp4Linear.forward"
        require_tensor(fn, "x", x)
        require_dtype(fn, "x", x, ACTIVATION_DTYPES)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{fn}: x must have shape [..., {self.in_features}], got {tuple(x.shape)}")
        if x.device != self.weight.device:
            raise ValueError(f"{fn}: x is on {x.device} but the layer's weights are on {self.weight.device}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            return x.new_empty((*lead, self.out_features))
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        backend = backends.get(self.resolved_backend(x2.device))
        if backend.name != self._layout:
            raise RuntimeError(  # pragma: no cover - every layout change goes through _adopt_device_layout
                f"{fn}: the weights are in the {self._layout} layout but {backend.name} serves {x2.device}")
        return backend.forward(self, x2).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        try:
            backend = self.resolved_backend()
        except Exception as exc:  # the repr must not raise; say why no kernel serves
            backend = f"unavailable ({type(exc).__name__})"
        mode = "batch-invariant" if self.batch_invariant else "fast"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"activation={self.activation}, mode={mode}, backend={backend}"
        )


def _scalar_argument(fn: str, name: str, value: object) -> torch.Tensor:
    """A number or a one-element tensor, as a 0-d float32 tensor (CPU for numbers, else the tensor's device)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"{fn}: {name} must be a number or a one-element tensor, got {type(value).__name__}")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{fn}: {name} must hold one value, got shape {tuple(value.shape)}")
        if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{fn}: {name} must be a floating-point value, got dtype {value.dtype}")
        return value.detach().float().reshape(())
    return torch.tensor(float(value), dtype=torch.float32)


# Integer dtypes of the same width, for moving quantized tensors through a cast function without converting them.
_INT_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _move_bytes(fn, t: torch.Tensor) -> torch.Tensor:
    """t moved where fn sends tensors (device, sharing, pinning), its dtype and bytes unchanged."""
    as_int = t.view(_INT_OF_WIDTH[t.element_size()]) if t.dtype != _INT_OF_WIDTH[t.element_size()] else t
    out = fn(as_int)
    if out.dtype != as_int.dtype:  # fn converts integers too (Module.type): take only its device
        return t.to(out.device)
    return out.view(t.dtype)
