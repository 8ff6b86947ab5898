"""NvFp4Linear: a Linear layer with NVFP4 weights (and optionally NVFP4 activations) and a batch-invariant mode."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .activation import quantize_activations_reference
from .checks import ACTIVATION_DTYPES, require_dtype, require_tensor
from .dispatch import BACKENDS, NoKernelError, device_capability, quantizer_compiled_for, select_backend
from .format import BLOCK_SIZE, GLOBAL_SCALE_RANGE, round_up, swizzle_scales
from .quantize import quantize

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


# The hardware -> kernel decisions are constants for a device; torch.compile bakes them in at trace time instead of
# tracing the library queries (ctypes) behind them.
@torch.compiler.assume_constant_result
def _resolve_backend(device_type: str, device_index: int | None, batch_invariant: bool, backend: str) -> str:
    device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
    return select_backend(device_type, device_capability(device), batch_invariant=batch_invariant, backend=backend)


@torch.compiler.assume_constant_result
def _has_quantizer_kernel(device_index: int | None) -> bool:
    device = torch.device("cuda", device_index) if device_index is not None else torch.device("cuda")
    return quantizer_compiled_for(device_capability(device))


# Blackwell GEMM operand alignment (docs/blackwell.md): K rows of 16 bytes for TMA loads, N rows of 16 bytes for the
# bf16/fp16 TMA store.
_BLACKWELL_K_ALIGN = 32
_BLACKWELL_N_ALIGN = 8


class NvFp4Linear(nn.Module):
    """y = x W^T + b with W in NVFP4 (ModelOpt state_dict layout).

    batch_invariant=True promises that each output row depends only on its own input row, the weights and the
    device type, bitwise, whatever the batch holds. Activations are then quantized per row (static or per-token
    global scale); a batch-wide dynamic scale is never used. backend: "auto" picks the compiled kernel for the
    device and raises if there is none; "reference" runs the (slow) reference math on any device.
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
        if not isinstance(in_features, int) or in_features <= 0 or in_features % BLOCK_SIZE:
            raise ValueError(f"{fn}: in_features must be a positive multiple of {BLOCK_SIZE}, got {in_features}")
        if not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"{fn}: out_features must be an integer >= 1, got {out_features}")
        if dtype not in ACTIVATION_DTYPES:
            raise TypeError(f"{fn}: dtype must be torch.bfloat16 or torch.float16, got {dtype}")
        if activation not in ACTIVATION_MODES:
            raise ValueError(f"{fn}: activation must be one of {ACTIVATION_MODES}, got {activation!r}")
        if backend not in BACKENDS:
            raise ValueError(f"{fn}: backend must be one of {BACKENDS}, got {backend!r}")
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
        # Derived, not saved: the 128x4-swizzled copy of weight_scale that the kernels read.
        self.register_buffer("weight_scale_swizzled", swizzle_scales(self.weight_scale), persistent=False)
        # Derived, not saved: the packed weight padded for the Blackwell GEMMs (K to a multiple of 32, N to a
        # multiple of 8, zeros), or None when no padding is needed. The swizzled scales need no extra padding: their
        # layout already pads rows to 128 and 16-element groups to 4, with zeros.
        self.register_buffer("weight_blackwell", None, persistent=False)
        self._refresh_derived()

    # --- construction ------------------------------------------------------------------------------------------

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
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"NvFp4Linear.from_linear: linear must be an nn.Linear, got {type(linear).__name__}")
        mode = activation or ("static" if input_amax is not None else "per-token")
        if mode == "static" and input_amax is None:
            raise ValueError("NvFp4Linear.from_linear: activation='static' needs input_amax")
        if mode != "static" and input_amax is not None:
            raise ValueError(f"NvFp4Linear.from_linear: input_amax is only used with activation='static', got activation={mode!r}")
        w = linear.weight.detach()
        dtype = w.dtype if w.dtype in ACTIVATION_DTYPES else torch.bfloat16
        layer = cls(
            linear.in_features, linear.out_features, linear.bias is not None, batch_invariant=batch_invariant,
            device=w.device, dtype=dtype, activation=mode, backend=backend,
        )
        q = quantize(w, recipe=recipe)
        with torch.no_grad():
            layer.weight.copy_(q.data)
            layer.weight_scale.copy_(q.scale)
            layer.weight_scale_2.copy_(q.global_scale)
            if mode == "static":
                amax = torch.as_tensor(input_amax, dtype=torch.float32).reshape(())
                if not (torch.isfinite(amax) and amax > 0):
                    raise ValueError(f"NvFp4Linear.from_linear: input_amax must be finite and > 0, got {amax.item()}")
                layer.input_scale.copy_(amax / GLOBAL_SCALE_RANGE)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach().to(dtype))
        layer._refresh_derived()
        return layer

    def _refresh_derived(self) -> None:
        self.weight_scale_swizzled = swizzle_scales(self.weight_scale)
        n, k = self.out_features, self.in_features
        n_pad, k_pad = round_up(n, _BLACKWELL_N_ALIGN), round_up(k, _BLACKWELL_K_ALIGN)
        if (n_pad, k_pad) == (n, k):
            self.weight_blackwell = None
        else:
            self.weight_blackwell = torch.nn.functional.pad(self.weight, (0, (k_pad - k) // 2, 0, n_pad - n))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # load_state_dict would silently cast (fp32 values into an e4m3 buffer get re-rounded): validate first.
        n, k = self.out_features, self.in_features
        for name, (dtype, shape_of) in _STATE_LAYOUT.items():
            key = prefix + name
            if key not in state_dict:
                continue
            value = state_dict[key]
            if name == "input_scale" and self.input_scale is None:
                raise ValueError(
                    f"NvFp4Linear: state_dict has {key} but the layer was built with activation={self.activation!r}; "
                    f"build it with activation='static' to use a calibrated input scale"
                )
            scalar = name in ("weight_scale_2", "input_scale")
            allowed = (dtype, torch.bfloat16) if scalar else (dtype,)  # some ModelOpt exports carry bf16 scalars
            require_dtype("NvFp4Linear.load_state_dict", key, value, allowed)
            expected = shape_of(n, k)
            if scalar and value.numel() == 1:
                state_dict[key] = value.float().reshape(())
            elif tuple(value.shape) != expected:
                raise ValueError(f"NvFp4Linear.load_state_dict: {key} must have shape {expected}, got {tuple(value.shape)}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        self._refresh_derived()

    # --- forward -----------------------------------------------------------------------------------------------

    def resolved_backend(self, device: torch.device | None = None) -> str:
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
        backend = self.resolved_backend(x2.device)
        act, alpha = self._activation_operand(x2, backend)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if backend == "reference":
            out = ops.call(ops.mm_reference, ops.mm_reference_impl, act, self.weight, self.weight_scale.view(torch.uint8), alpha, bias, x.dtype)
        elif backend == "sm90":
            out = ops.call(ops.mm_sm90, ops.mm_sm90_impl, act, self.weight, self.weight_scale_swizzled, alpha, bias, x.dtype, self.batch_invariant)
        elif backend in ("sm100", "sm120"):
            # NVFP4 x NVFP4 on block-scaled tensor cores; weights padded once (_refresh_derived), N sliced back.
            op, impl = (ops.mm_sm100, ops.mm_sm100_impl) if backend == "sm100" else (ops.mm_sm120, ops.mm_sm120_impl)
            w = self.weight if self.weight_blackwell is None else self.weight_blackwell
            n_pad = w.shape[0]
            if bias is not None and n_pad != self.out_features:
                bias = torch.nn.functional.pad(bias, (0, n_pad - self.out_features))
            act_packed, act_scales = act
            out = ops.call(op, impl, act_packed, act_scales, w, self.weight_scale_swizzled, alpha, bias, x.dtype, self.batch_invariant)
            if n_pad != self.out_features:
                out = out[:, : self.out_features]
        else:  # pragma: no cover - select_backend only returns families the library holds
            raise NotImplementedError(f"{fn}: backend {backend} is not wired yet")
        return out.reshape(*lead, self.out_features)

    def _activation_operand(self, x2: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(activation operand of the GEMM, alpha: one value or one per row).

        sm100/sm120: the operand is (packed e2m1 [M, K_pad/2], swizzled e4m3 scales), K zero-padded to a multiple of
        32 (only when in_features is not one already); alpha[m] = row_scale[m] * weight_scale_2."""
        if backend in ("sm100", "sm120"):
            if self.activation == "none":
                raise NoKernelError(
                    f"NvFp4Linear.forward: W4A16 (activation='none') has no {backend} kernel (the Blackwell GEMMs take "
                    f"NVFP4 activations); use activation='static' or 'per-token', or backend='reference'"
                )
            static = self.input_scale.reshape(1) if self.input_scale is not None else None
            k_pad = round_up(self.in_features, _BLACKWELL_K_ALIGN)
            if k_pad != self.in_features:
                x2 = torch.nn.functional.pad(x2, (0, k_pad - self.in_features))
            packed, scales, alpha = ops.call(
                ops.quantize_activations_nvfp4, ops.quantize_activations_nvfp4_impl, x2, static, self.weight_scale_2.reshape(1)
            )
            return (packed, scales), alpha
        if self.activation == "none":
            if backend != "reference" and x2.dtype != torch.bfloat16:
                raise TypeError(f"NvFp4Linear.forward: W4A16 on {backend} takes bfloat16 x, got {x2.dtype}")
            return x2, self.weight_scale_2.reshape(1)
        static = self.input_scale.reshape(1) if self.input_scale is not None else None
        if x2.device.type == "cuda" and not _has_quantizer_kernel(x2.device.index):
            _, _, act, alpha = quantize_activations_reference(x2, static, self.weight_scale_2)  # reference backend on other GPUs
        else:
            # the quantizer multiplies each row's decode scale by weight_scale_2: alpha comes out of the same launch
            act, alpha = ops.call(
                ops.quantize_activations_dequant, ops.quantize_activations_dequant_impl, x2, static, self.weight_scale_2.reshape(1)
            )
        return act, alpha

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
