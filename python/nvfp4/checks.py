"""Argument validation shared by the public entry points: each failure names the argument and the rule."""

from __future__ import annotations

from collections.abc import Iterable

import torch

ACTIVATION_DTYPES = (torch.bfloat16, torch.float16)


def require_tensor(fn: str, name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def require_dtype(fn: str, name: str, t: torch.Tensor, allowed: Iterable[torch.dtype]) -> None:
    allowed = tuple(allowed)
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{fn}: {name} must have dtype {names}; got {str(t.dtype).replace('torch.', '')}")


def require_dim(fn: str, name: str, t: torch.Tensor, dim: int) -> None:
    if t.dim() != dim:
        raise ValueError(f"{fn}: {name} must be {dim}-D, got shape {tuple(t.shape)}")


def require_shape(fn: str, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def require_multiple(fn: str, name: str, value: int, multiple: int) -> None:
    if value <= 0 or value % multiple:
        raise ValueError(f"{fn}: {name} must be a positive multiple of {multiple}, got {value}")


def require_same_device(fn: str, reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, t in others.items():
        if t is not None and t.device != reference.device:
            raise ValueError(f"{fn}: {name} is on {t.device} but {reference_name} is on {reference.device}; move them to one device")


def require_contiguous(fn: str, name: str, t: torch.Tensor) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{fn}: {name} must be contiguous (call .contiguous() first)")


def require_scale_scalar(fn: str, name: str, t: torch.Tensor) -> None:
    """A per-tensor scale: one float32 value."""
    require_tensor(fn, name, t)
    if t.numel() != 1:
        raise ValueError(f"{fn}: {name} must hold one value (0-d or [1]), got shape {tuple(t.shape)}")
    require_dtype(fn, name, t, (torch.float32,))
