"""nvfp4.kernel_info(): what this installation holds and which kernel would serve the current device."""

from __future__ import annotations

from typing import Any

import torch

from . import _lib
from . import backends
from .backends import NoKernelError


def kernel_info(device: torch.device | str | None = None) -> dict[str, Any]:
    path = _lib.library_path()
    info: dict[str, Any] = {
        "library_path": str(path) if path else None,
        "library_loaded": _lib.load() is not None,
        "compiled_archs": [f"sm_{a}a" for a in _lib.compiled_archs()],
        "gemm_backends": sorted(backends.compiled_backends()),
        "torch": torch.__version__,
    }
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    cap = backends.device_capability(device)
    info["device"] = str(device) if cap is None else f"{device} ({torch.cuda.get_device_name(device)}, sm_{cap[0]}{cap[1]})"
    info["activation_quantizer"] = "reference (CPU)" if cap is None else (
        "cuda kernel" if backends.quantizer_compiled_for(cap) else "none compiled for this device")
    for mode, invariant in (("gemm_batch_invariant", True), ("gemm_fast", False)):
        try:
            info[mode] = backends.select(device.type, cap, batch_invariant=invariant).name
        except NoKernelError as exc:
            info[mode] = f"none: {exc}"
    return info
