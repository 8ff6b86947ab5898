"""Loads the compiled kernel library (libnvfp4_kernels.so) with ctypes and declares its C ABI.

The library is optional: without nvcc at install time the package is pure Python and every CUDA entry point
raises a clear error instead of falling back silently.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

ABI_VERSION = 2
_LIB_NAME = "libnvfp4_kernels.so"

_c_i64 = ctypes.c_int64
_c_ptr = ctypes.c_void_p

# name -> (restype, argtypes); mirrors cpp/include/nvfp4/nvfp4.h
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "nvfp4_abi_version": (ctypes.c_int, []),
    "nvfp4_last_error": (ctypes.c_char_p, []),
    "nvfp4_compiled_archs": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int), ctypes.c_int]),
    "nvfp4_quantize_activations": (
        ctypes.c_int,
        [_c_ptr, ctypes.c_int, _c_i64, _c_i64, _c_i64, _c_ptr, _c_ptr, _c_ptr, _c_ptr, _c_ptr, _c_ptr, _c_ptr],
    ),
    "nvfp4_rms_norm": (
        ctypes.c_int,
        [_c_ptr, ctypes.c_int, _c_i64, _c_i64, _c_i64, _c_ptr, ctypes.c_float, _c_ptr, _c_ptr],
    ),
    "nvfp4_sm90_gemm_workspace_size": (
        ctypes.c_int,
        [_c_i64, _c_i64, _c_i64, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)],
    ),
    "nvfp4_sm90_gemm_plan": (
        ctypes.c_int,
        [_c_i64, _c_i64, _c_i64, ctypes.c_int] + [ctypes.POINTER(ctypes.c_int)] * 4,
    ),
    "nvfp4_sm90_set_split_reduce": (ctypes.c_int, [ctypes.c_int]),
    "nvfp4_sm90_occupancy": (
        ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
    ),
    "nvfp4_sm90_gemm": (
        ctypes.c_int,
        [_c_ptr, _c_i64, _c_i64, _c_i64, _c_i64, _c_ptr, _c_ptr, _c_ptr, ctypes.c_int, _c_ptr, _c_ptr,
         ctypes.c_int, _c_i64, ctypes.c_int, _c_ptr, ctypes.c_size_t, _c_ptr],
    ),
}

# Blackwell (issue 3): the same C ABI for SM100 (sm_100a) and SM120 (sm_120a); see the Blackwell section of nvfp4.h.
for _fam in ("sm100", "sm120"):
    _SIGNATURES.update({
        f"nvfp4_{_fam}_num_configs": (ctypes.c_int, []),
        f"nvfp4_{_fam}_config_info": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
        f"nvfp4_{_fam}_select_config": (ctypes.c_int, [_c_i64, _c_i64, _c_i64, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]),
        f"nvfp4_{_fam}_config_name": (ctypes.c_int, [_c_i64, _c_i64, _c_i64, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
        f"nvfp4_{_fam}_host_check": (
            ctypes.c_int,
            [ctypes.c_int, _c_i64, _c_i64, _c_i64, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
             ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_int)],
        ),
        f"nvfp4_{_fam}_gemm_workspace_size": (
            ctypes.c_int, [_c_i64, _c_i64, _c_i64, ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)],
        ),
        f"nvfp4_{_fam}_gemm": (
            ctypes.c_int,
            [_c_ptr, _c_ptr, _c_i64, _c_i64, _c_i64, _c_ptr, _c_ptr, _c_ptr, ctypes.c_int, _c_ptr, _c_ptr,
             ctypes.c_int, _c_i64, ctypes.c_int, _c_ptr, ctypes.c_size_t, _c_ptr],
        ),
    })
del _fam


class KernelLibraryError(RuntimeError):
    """The compiled library is missing, too old, or a kernel call reported an error."""


def library_path() -> Path | None:
    """Path of the compiled library: $NVFP4_LIBRARY if set, else the one installed next to this module."""
    override = os.environ.get("NVFP4_LIBRARY")
    if override:
        return Path(override)
    candidate = Path(__file__).with_name(_LIB_NAME)
    return candidate if candidate.exists() else None


@functools.cache
def load() -> ctypes.CDLL | None:
    """The loaded library, or None when the package was installed without compiled kernels."""
    path = library_path()
    if path is None:
        return None
    lib = ctypes.CDLL(str(path))
    version = lib.nvfp4_abi_version()
    if version != ABI_VERSION:
        raise KernelLibraryError(f"{path}: ABI version {version}, this Python package needs {ABI_VERSION}; reinstall nvfp4")
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = restype, argtypes
    return lib


def require() -> ctypes.CDLL:
    lib = load()
    if lib is None:
        raise KernelLibraryError(
            "nvfp4 was installed without its compiled CUDA kernels (no nvcc at build time); reinstall with the CUDA "
            "toolkit available, or use backend='reference'"
        )
    return lib


def has_symbol(name: str) -> bool:
    lib = load()
    return lib is not None and hasattr(lib, name)


def check(status: int, what: str) -> None:
    """Raise the library's own message (which names the argument and rule) when a call failed."""
    if status != 0:
        message = require().nvfp4_last_error().decode(errors="replace")
        kind = ValueError if status == 1 else KernelLibraryError
        raise kind(f"{what}: {message}")


@functools.cache
def compiled_archs() -> tuple[int, ...]:
    """SM numbers the library holds device code for, e.g. (90, 100, 120); () without the library."""
    lib = load()
    if lib is None:
        return ()
    buf = (ctypes.c_int * 16)()
    count = lib.nvfp4_compiled_archs(buf, 16)
    return tuple(buf[i] for i in range(min(count, 16)))
