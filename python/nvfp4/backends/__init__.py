"""The backend registry: which implementation serves a layer on a device.

Selection is a pure function of (device type, compute capability, which backends the loaded library holds, the
user's request), so tests can inject any capability. A backend's compiled code runs only on the capabilities it
declares (arch-specific SASS such as sm_100a runs on 10.0 alone); nothing falls back silently: when no kernel exists
the caller gets NoKernelError, which says how to opt into the reference path.

Adding a hardware family = one module here, its cpp/kernels/<arch>/ folder and its entry in the CMake arch list, plus
one entry in REGISTRY below.
"""

from __future__ import annotations

import torch

from .. import _lib
from . import blackwell, reference, sm90
from .base import Backend, NoKernelError

REGISTRY: tuple[Backend, ...] = (reference.BACKEND, sm90.BACKEND, blackwell.SM100, blackwell.SM120)
_BY_NAME = {b.name: b for b in REGISTRY}
BACKEND_NAMES: tuple[str, ...] = ("auto",) + tuple(_BY_NAME)
KERNEL_BACKENDS: tuple[Backend, ...] = tuple(b for b in REGISTRY if b.arch_sm is not None)

__all__ = ["Backend", "BACKEND_NAMES", "KERNEL_BACKENDS", "NoKernelError", "REGISTRY", "compiled_backends", "get",
           "device_capability", "for_capability", "quantizer_compiled_for", "select"]


def get(name: str) -> Backend:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}") from None


def for_capability(capability: tuple[int, int] | None) -> Backend | None:
    """The kernel backend whose compiled code runs on this compute capability, compiled or not (None: none)."""
    return next((b for b in KERNEL_BACKENDS if b.runs_on(capability)), None)


def compiled_backends() -> frozenset[str]:
    """Names of the kernel backends whose GEMM the loaded library holds."""
    return frozenset(b.name for b in KERNEL_BACKENDS if b.compiled())


def quantizer_compiled_for(capability: tuple[int, int] | None) -> bool:
    """Whether the library holds the activation quantizer (built for every compiled arch) for this capability."""
    b = for_capability(capability)
    return b is not None and b.arch_sm in _lib.compiled_archs()


def device_capability(device: torch.device) -> tuple[int, int] | None:
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


def select(
    device_type: str,
    capability: tuple[int, int] | None,
    *,
    batch_invariant: bool,
    backend: str = "auto",
    compiled: frozenset[str] | None = None,
) -> Backend:
    """The backend that serves a layer; raises NoKernelError (no kernel) or ValueError (a request that cannot be met).

    compiled: the kernel backends to consider built (default: what the loaded library holds)."""
    if backend != "auto":
        get(backend)  # validates the name
    if backend == "reference":
        return reference.BACKEND
    if device_type == "cpu":
        if backend != "auto":
            raise ValueError(f"backend={backend!r} needs a CUDA device; CPU tensors use backend='reference' or 'auto'")
        return reference.BACKEND
    if device_type != "cuda":
        raise NoKernelError(f"nvfp4 has no kernels for device type {device_type!r}; use CPU or CUDA tensors")
    built = compiled_backends() if compiled is None else compiled
    cap = f"{capability[0]}.{capability[1]}" if capability is not None else "unknown"
    if backend != "auto" and not get(backend).runs_on(capability):
        runs = ", ".join(f"{c[0]}.{c[1]}" for c in sorted(get(backend).capabilities))
        raise ValueError(f"backend={backend!r} cannot run on a device of compute capability {cap} (its kernels run on "
                         f"{runs})")
    found = for_capability(capability) if backend == "auto" else get(backend)
    if found is not None and found.name in built:
        return found
    mode = "batch-invariant" if batch_invariant else "fast"
    held = ", ".join(sorted(built)) or "none"
    served = "; ".join(f"{b.name}: {', '.join(f'{c[0]}.{c[1]}' for c in sorted(b.capabilities))}" for b in KERNEL_BACKENDS)
    raise NoKernelError(
        f"nvfp4: no {mode} NVFP4 GEMM kernel for compute capability {cap} in this build (GEMM kernels compiled for: "
        f"{held}; each runs on these capabilities only: {served}). Pass backend='reference' to NvFp4Linear to use the "
        f"slow reference path explicitly."
    )
