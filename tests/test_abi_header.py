"""Every ctypes declaration matches cpp/include/nvfp4/nvfp4.h: a drift would corrupt memory silently, so it fails here.

The header is parsed (each NVFP4_API prototype), C types are mapped to the ctypes type that passes them, and the
result is compared with what Python declares (nvfp4._lib's own functions plus every backend module's).
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

import nvfp4  # noqa: F401  (imports every backend, which declare their functions)
from nvfp4 import _lib

HEADER = Path(__file__).resolve().parents[1] / "cpp" / "include" / "nvfp4" / "nvfp4.h"

# C parameter/return type (const stripped) -> the ctypes type Python must declare for it.
_C_TO_CTYPES = {
    "int": ctypes.c_int,
    "int64_t": ctypes.c_int64,
    "size_t": ctypes.c_size_t,
    "float": ctypes.c_float,
    "void*": ctypes.c_void_p,
    "uint8_t*": ctypes.c_void_p,  # device pointers travel as integers
    "float*": ctypes.c_void_p,
    "char*": ctypes.c_char_p,
    "int*": ctypes.POINTER(ctypes.c_int),
    "size_t*": ctypes.POINTER(ctypes.c_size_t),
    "int64_t*": ctypes.POINTER(ctypes.c_int64),
}
# Host-side output arrays declared as typed pointers in Python although the C type above says void-like.
_HOST_POINTERS = {("nvfp4_compiled_archs", 0): ctypes.POINTER(ctypes.c_int)}
# Device arrays whose C type would otherwise map to a host pointer.
_DEVICE_POINTERS = {("nvfp4_sm90_grouped_linear", 8): ctypes.c_void_p}  # expert_offsets


def _normalise(c_type: str) -> str:
    t = re.sub(r"\bconst\b", "", c_type)
    t = re.sub(r"\s+", "", t)
    return t


def header_prototypes() -> dict[str, tuple[str, list[str]]]:
    text = re.sub(r"//[^\n]*", "", HEADER.read_text())
    protos = {}
    for ret, name, args in re.findall(r"NVFP4_API\s+([\w\s\*]+?)\s*\b(nvfp4_\w+)\s*\(([^)]*)\)\s*;", text, re.S):
        params = [] if args.strip() in ("", "void") else [a.strip() for a in args.split(",")]
        types = []
        for p in params:
            m = re.match(r"(.*?)(\w+)$", p.strip(), re.S)
            assert m, f"cannot parse parameter {p!r} of {name}"
            types.append(_normalise(m.group(1)))
        protos[name] = (_normalise(ret), types)
    return protos


def _expected(name: str, i: int | None, c_type: str):
    if i is not None and (name, i) in _HOST_POINTERS:
        return _HOST_POINTERS[(name, i)]
    if i is not None and (name, i) in _DEVICE_POINTERS:
        return _DEVICE_POINTERS[(name, i)]
    if c_type not in _C_TO_CTYPES:
        pytest.fail(f"{HEADER.name}: {name} uses C type {c_type!r} that this test cannot map; extend _C_TO_CTYPES")
    return _C_TO_CTYPES[c_type]


def test_header_parses_into_every_entry_point():
    protos = header_prototypes()
    assert len(protos) >= 20
    assert {"nvfp4_abi_version", "nvfp4_quantize_activations", "nvfp4_sm90_linear", "nvfp4_sm100_gemm", "nvfp4_chunk_k"} <= set(protos)


def test_every_header_function_is_declared_in_python_and_vice_versa():
    protos = header_prototypes()
    declared = _lib.declared_signatures()
    assert sorted(set(protos) - set(declared)) == [], "functions of nvfp4.h that Python does not declare"
    assert sorted(set(declared) - set(protos)) == [], "functions Python declares that nvfp4.h does not have"


@pytest.mark.parametrize("name", sorted(header_prototypes()))
def test_ctypes_declaration_matches_header(name):
    ret, params = header_prototypes()[name]
    restype, argtypes = _lib.declared_signatures()[name]
    want_ret = ctypes.c_char_p if ret == "char*" else _expected(name, None, ret)
    assert restype == want_ret, f"{name}: returns {ret}, Python declares {restype}"
    assert len(argtypes) == len(params), f"{name}: {len(params)} parameters in nvfp4.h, {len(argtypes)} declared"
    for i, (c_type, py_type) in enumerate(zip(params, argtypes)):
        assert py_type == _expected(name, i, c_type), f"{name} parameter {i}: C {c_type}, Python {py_type}"


def test_abi_version_matches_header():
    m = re.search(r"#define NVFP4_ABI_VERSION (\d+)", HEADER.read_text())
    assert m and int(m.group(1)) == _lib.ABI_VERSION
