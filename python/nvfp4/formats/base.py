"""What a checkpoint format module provides (formats/modelopt.py, formats/compressed_tensors.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..checks import require_global_scale


class UnsupportedCheckpointError(ValueError):
    """The checkpoint uses a quantization format or feature nvfp4 does not load."""


@dataclass
class QuantSpec:
    """A checkpoint's quantization, as read from its config by the format that recognised it."""

    format: str  # the format module's NAME
    activation: str  # "static" | "none"
    ignore: list[str] = field(default_factory=list)
    targets: list[str] | None = None  # module patterns the config quantizes (None: every Linear not ignored)
    description: str = ""


# Tensor-name suffixes of quantization variants no format here loads (AWQ pre-scales, SVDQuant, zero points).
UNSUPPORTED_SUFFIXES = ("pre_quant_scale", "svdquant_lora_a", "svdquant_lora_b", "weight_zero_point", "input_zero_point")


def divide_by(t: torch.Tensor, constant: float) -> torch.Tensor:
    """t / constant with the constant as a tensor of t's dtype on t's device: one IEEE division per element on every
    device (CUDA divides by a CPU scalar as a multiplication by its reciprocal, which rounds differently)."""
    return t / torch.tensor(constant, dtype=t.dtype, device=t.device)


def dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def global_scalar(fn: str, key: str, t: torch.Tensor) -> torch.Tensor:
    """A stored per-tensor scale as a 0-d float32: one finite, positive value (bf16 is accepted: some exports use it)."""
    if t.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"{fn}: {key} must be float32 (or bfloat16), got {dtype_name(t)}")
    require_global_scale(fn, key, t)
    return t.float().reshape(())


def config_object(value: Any, where: str) -> dict[str, Any]:
    """A config entry that must be a JSON object; `where` names the file and key."""
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(value).__name__} ({value!r:.60})")
    return value


def optional_object(value: Any, where: str) -> dict[str, Any]:
    """An optional config object (absent or null: empty)."""
    return {} if value is None else config_object(value, where)


def pattern_list(value: Any, where: str) -> list[str]:
    """A list of module-name patterns (absent or null: empty). A bare string is refused: read as a list it would be
    split into one-character patterns."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of module-name patterns (strings), got {type(value).__name__} "
                         f"({value!r:.80})")
    return list(value)
