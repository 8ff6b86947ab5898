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


def require_int(fn: str, name: str, value: object, minimum: int | None = None) -> int:
    """An integer argument (bool is refused: True would silently mean 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{fn}: {name} must be an integer >= {minimum}, got {value}")
    return value


def require_bool(fn: str, name: str, value: object) -> bool:
    """A flag argument: a bool, so that strings such as 'no' or 'false' cannot mean True."""
    if not isinstance(value, bool):
        raise TypeError(f"{fn}: {name} must be True or False, got {type(value).__name__} ({value!r})")
    return value


def require_global_scale(fn: str, name: str, t: torch.Tensor) -> None:
    """A per-tensor (global) scale value: finite and > 0. Zero turns the layer's output into zeros, a negative value
    flips its sign and NaN/inf poison every output element."""
    v = t.detach().float().reshape(-1)
    if v.numel() != 1:
        raise ValueError(f"{fn}: {name} must hold one value (shape () or [1]), got shape {tuple(t.shape)}")
    if not (bool(torch.isfinite(v).all()) and float(v) > 0):
        raise ValueError(f"{fn}: {name} must be finite and > 0, got {float(v)}")


# e4m3fn codes: bit 7 is the sign, 0x7F and 0xFF are NaN (the format has no infinity).
_E4M3_SIGN = 0x80
_E4M3_NAN = 0x7F


def require_block_scales(fn: str, name: str, t: torch.Tensor) -> None:
    """Block scales (float8_e4m3fn): finite and non-negative, sign bit clear. A NaN block scale makes its whole output
    row NaN; a negative one flips the sign of its 16 products (the Blackwell kernels read unsigned ue4m3 scales)."""
    raw = t.detach().reshape(-1).view(torch.uint8)
    nan = (raw & 0x7F) == _E4M3_NAN
    negative = ((raw & _E4M3_SIGN) != 0) & ~nan
    for bad, rule in ((nan, "NaN"), (negative, "negative (sign bit set)")):
        count = int(bad.sum())
        if count:
            first = int(bad.nonzero()[0])
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(first), t.shape)) if t.dim() else ()
            raise ValueError(f"{fn}: {name} must hold finite, non-negative e4m3 block scales; {count} are {rule} "
                             f"(first at index {index}, byte 0x{int(raw[first]):02X})")
