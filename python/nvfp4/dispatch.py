"""Which implementation serves a layer on a given device: the one place that maps hardware to kernels.

Pure functions of (device type, compute capability, what the library holds, the user's request) so that tests can
inject any capability. No SM100/SM120 code is ever selected for another architecture family, and nothing falls
back silently: when no kernel exists the caller gets an error that says how to opt into the reference path.
"""

from __future__ import annotations

import functools

import torch

from . import _lib

BACKENDS = ("auto", "reference", "sm90", "sm100", "sm120")

# GEMM entry point of each architecture family in the C ABI.
_GEMM_SYMBOLS = {"sm90": "nvfp4_sm90_gemm", "sm100": "nvfp4_sm100_gemm", "sm120": "nvfp4_sm120_gemm"}


class NoKernelError(RuntimeError):
    """No compiled kernel can serve this request on this device."""


def arch_family(capability: tuple[int, int]) -> str | None:
    """Compute capability -> the kernel family built for it: 9.x -> sm90, 10.x -> sm100, 12.x -> sm120."""
    return {9: "sm90", 10: "sm100", 12: "sm120"}.get(capability[0])


def family_sm(family: str) -> int:
    return int(family[2:])


@functools.cache
def compiled_gemm_families() -> frozenset[str]:
    """Families whose GEMM the loaded library holds (device code compiled and entry point linked)."""
    archs = _lib.compiled_archs()
    return frozenset(f for f, sym in _GEMM_SYMBOLS.items() if family_sm(f) in archs and _lib.has_symbol(sym))


def quantizer_compiled_for(capability: tuple[int, int]) -> bool:
    family = arch_family(capability)
    return family is not None and family_sm(family) in _lib.compiled_archs()


def select_backend(
    device_type: str,
    capability: tuple[int, int] | None,
    *,
    batch_invariant: bool,
    backend: str = "auto",
    gemm_families: frozenset[str] | None = None,
) -> str:
    """Returns "reference" or a kernel family name, or raises NoKernelError / ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "reference":
        return "reference"
    if device_type == "cpu":
        if backend != "auto":
            raise ValueError(f"backend={backend!r} needs a CUDA device; CPU tensors use backend='reference' or 'auto'")
        return "reference"
    if device_type != "cuda":
        raise NoKernelError(f"nvfp4 has no kernels for device type {device_type!r}; use CPU or CUDA tensors")
    families = compiled_gemm_families() if gemm_families is None else gemm_families
    family = arch_family(capability)
    cap = f"{capability[0]}.{capability[1]}"
    if backend != "auto" and backend != family:
        raise ValueError(f"backend={backend!r} cannot run on a device of compute capability {cap} (its family is {family})")
    if family is not None and family in families:
        return family
    mode = "batch-invariant" if batch_invariant else "fast"
    held = ", ".join(sorted(families)) or "none"
    raise NoKernelError(
        f"nvfp4: no {mode} NVFP4 GEMM kernel for compute capability {cap} in this build (GEMM kernels compiled for: "
        f"{held}). Pass backend='reference' to NvFp4Linear to use the slow reference path explicitly."
    )


def device_capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_capability(device)
