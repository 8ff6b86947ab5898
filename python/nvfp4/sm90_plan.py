"""What the Hopper GEMM will run for a shape (token tile, K chunk, splits, split reduction), and a switch that forces
the split reduction for tests and benchmarks. Both read the C library's own plan (cpp/kernels/sm90/config.h and
dispatch.cu), so there is no second copy of the rules here.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from typing import Iterator, Literal

from . import _lib

SplitReduce = Literal["none", "cluster", "kernel"]
ForcedReduce = Literal["auto", "cluster", "kernel"]
# NVFP4_SM90_REDUCE_* of nvfp4.h
_REDUCE_NAMES: dict[int, SplitReduce] = {0: "none", 1: "cluster", 2: "kernel"}
_REDUCE_CODES = {"auto": 0, "cluster": 1, "kernel": 2}


@dataclass(frozen=True)
class Sm90Plan:
    token_tile: int  # wgmma N of the kernel: 8, 16, 32, 64 or 128
    chunk_k: int  # K chunk length; fixes every output's reduction order
    splits: int  # number of K chunks
    reduce: SplitReduce  # how split calls add their chunk sums ("none": the call does not split)


def sm90_plan(m: int, n: int, k: int, invariant: bool = True) -> Sm90Plan:
    """The plan nvfp4_sm90_gemm follows for an (m, n, k) call on the current CUDA device."""
    lib = _lib.require()
    out = [ctypes.c_int(0) for _ in range(4)]
    _lib.check(lib.nvfp4_sm90_gemm_plan(m, n, k, int(invariant), *(ctypes.byref(v) for v in out)),
               "nvfp4_sm90_gemm_plan")
    tile, chunk, splits, reduce = (v.value for v in out)
    return Sm90Plan(tile, chunk, splits, _REDUCE_NAMES[reduce])


def set_split_reduce(mode: ForcedReduce) -> None:
    """From now on, in this process, split calls add their chunk sums the given way (the bits do not change).

    Forcing "cluster" makes calls fail with a clear error where the device cannot schedule the cluster.
    """
    if mode not in _REDUCE_CODES:
        raise ValueError(f"split reduction mode must be one of {sorted(_REDUCE_CODES)} (got {mode!r})")
    lib = _lib.require()
    _lib.check(lib.nvfp4_sm90_set_split_reduce(_REDUCE_CODES[mode]), "nvfp4_sm90_set_split_reduce")


@contextlib.contextmanager
def forced_split_reduce(mode: ForcedReduce) -> Iterator[None]:
    """set_split_reduce(mode) within the block, back to "auto" after it."""
    set_split_reduce(mode)
    try:
        yield
    finally:
        set_split_reduce("auto")
