"""Loads the compiled kernel library (libnvfp4_kernels.so) with ctypes and declares its C ABI.

The library is optional: without nvcc at install time the package is pure Python and every CUDA entry point
raises a clear error instead of falling back silently.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

ABI_VERSION = 4
_LIB_NAME = "libnvfp4_kernels.so"

_c_i64 = ctypes.c_int64
_c_ptr = ctypes.c_void_p

# name -> (restype, argtypes) of every C ABI function Python calls. The functions every build has are declared here;
# each backend module declares its own (backends/). tests/test_abi_header.py compares all of them with
# cpp/include/nvfp4/nvfp4.h, so a drift fails a test instead of corrupting memory.
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "nvfp4_abi_version": (ctypes.c_int, []),
    "nvfp4_last_error": (ctypes.c_char_p, []),
    "nvfp4_compiled_archs": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int), ctypes.c_int]),
    "nvfp4_quantize_activations": (
        ctypes.c_int,
        [_c_ptr, ctypes.c_int, _c_i64, _c_i64, _c_i64, _c_ptr, _c_ptr, _c_ptr, _c_ptr, _c_ptr, _c_ptr, _c_ptr],
    ),
    "nvfp4_chunk_k": (ctypes.c_int, [_c_i64, _c_i64, ctypes.POINTER(ctypes.c_int64)]),
    "nvfp4_rms_norm": (
        ctypes.c_int,
        [_c_ptr, ctypes.c_int, _c_i64, _c_i64, _c_i64, _c_ptr, ctypes.c_float, _c_ptr, _c_ptr],
    ),
}


def declare(signatures: dict[str, tuple[object, list[object]]]) -> None:
    """Adds C ABI declarations (a backend's functions); applied to the library whether or not it is loaded yet."""
    _SIGNATURES.update(signatures)
    if load.cache_info().currsize:
        lib = load()
        if lib is not None:
            _apply(lib, signatures)


def declared_signatures() -> dict[str, tuple[object, list[object]]]:
    return dict(_SIGNATURES)


def _apply(lib: ctypes.CDLL, signatures: dict[str, tuple[object, list[object]]]) -> None:
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = restype, argtypes


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
    _apply(lib, _SIGNATURES)
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
