"""The chunk rule: a function of (N, K) alone, one definition in Python and its C++ copy agreeing, chunks that
divide K/8 where K % 2048 == 0 (tensor-parallel shards hold whole chunks)."""

import ctypes

import pytest

from nvfp4 import _lib
from nvfp4.chunking import chunk_k, num_chunks

SHAPES = [(n, k) for n in (1, 24, 160, 1000, 2112, 4096, 6144, 8192, 10240, 28672, 36864, 57344, 131072)
          for k in (16, 48, 80, 1008, 1536, 1984, 2048, 4000, 4096, 5120, 7168, 8192, 14336, 16384, 18432, 25600, 28672)]


@pytest.mark.parametrize("n,k", SHAPES)
def test_chunk_is_a_multiple_of_256_and_tiles_k(n, k):
    kc = chunk_k(n, k)
    assert kc % 256 == 0 and kc >= 256
    assert 1 <= num_chunks(n, k) <= 16 or k % 2048 == 0
    if k % 2048 == 0:
        for tp in (2, 4, 8):
            assert (k // tp) % kc == 0, (n, k, tp, kc)


def test_python_and_c_rules_agree():
    lib = _lib.load()
    if lib is None or not hasattr(lib, "nvfp4_chunk_k"):
        pytest.skip("the compiled library is absent")
    for n, k in SHAPES:
        out = ctypes.c_int64(0)
        _lib.check(lib.nvfp4_chunk_k(n, k, ctypes.byref(out)), "nvfp4_chunk_k")
        assert out.value == chunk_k(n, k), (n, k)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="K a positive multiple of 16"):
        chunk_k(4096, 100)
