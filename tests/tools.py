"""Locating host tools for the build-proof tests: nvcc, cuobjdump, CUTLASS headers, the compiled library."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    candidate = Path(cuda_home) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else None


def cuobjdump() -> str | None:
    """cuobjdump from PATH or from the `nvidia-cuda-cuobjdump` wheel."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    compiler = nvcc()
    if compiler and (Path(compiler).parent / "cuobjdump").exists():
        return str(Path(compiler).parent / "cuobjdump")
    spec = importlib.util.find_spec("nvidia")
    for root in list(spec.submodule_search_locations or []) if spec else []:
        for candidate in Path(root).glob("**/bin/cuobjdump"):
            return str(candidate)
    return None


def cutlass_include() -> Path | None:
    env = os.environ.get("NVFP4_CUTLASS_INCLUDE_DIR")
    if env and (Path(env) / "cutlass" / "cutlass.h").exists():
        return Path(env)
    spec = importlib.util.find_spec("cutlass_library")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "source" / "include"
        if (candidate / "cutlass" / "cutlass.h").exists():
            return candidate
    for candidate in Path(__file__).resolve().parents[1].glob("build/*/_deps/cutlass-*/cutlass_library/source/include"):
        return candidate
    return None
