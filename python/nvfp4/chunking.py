"""The K-chunk rule: the one number that fixes every output's reduction order, from (N, K) alone.

Every invariant path sums K in chunks [c*kc, (c+1)*kc): each chunk's sum starts from zero, and the chunk sums are
added in chunk order to a zero total (0 + s0 + s1 + ...). How chunks are spread over CTAs, kernels or GPUs does not
change a bit, so the rule may depend on nothing about the particular GPU (SM count, MIG slice) or the batch.

The C library applies the same rule (cpp/kernels/chunk_rule.h, exported as nvfp4_chunk_k); tests/test_chunking.py
checks the two agree. Rule:
1. Fill: the chunk count s in 1..16 (chunks multiples of 256, at least 512, at most K rounded up to 256) that best
   fills 2 x 132 CTA slots with ceil(N/128) row tiles x s chunks (a 132-SM Hopper as the reference machine, fixed),
   less 1% per extra chunk.
2. Tensor parallelism: when K is a multiple of 2048, the chunk is lowered (in steps of 256) until it divides K/8,
   so that a row-parallel layer split over 2, 4 or 8 ranks gives every rank whole chunks.
"""

from __future__ import annotations

REFERENCE_SMS = 132  # the reference machine of the fill step; never the running GPU's count
MAX_CHUNKS = 16
TP_DEGREE = 8  # chunks divide K / TP_DEGREE (hence K / 2 and K / 4) where K allows it


def _fill_chunk(n: int, k: int) -> int:
    tiles = (n + 127) // 128
    slots = 2 * REFERENCE_SMS
    k256 = (k + 255) // 256 * 256
    best_kc, best_eff = k256, -1.0
    for s in range(1, MAX_CHUNKS + 1):
        kc = min(max(((k + s - 1) // s + 255) // 256 * 256, 512), k256)
        splits = (k + kc - 1) // kc
        if splits != s:
            continue  # this s is not reachable with multiples of 256; another s covers it
        ctas = tiles * splits
        waves = (ctas + slots - 1) // slots
        # fraction of CTA slots busy, minus a small charge per extra chunk
        eff = ctas / (waves * slots) - 0.01 * (splits - 1)
        if eff > best_eff + 1e-9:
            best_eff, best_kc = eff, kc
    return best_kc


def chunk_k(n: int, k: int) -> int:
    """Chunk length (a multiple of 256) for an N x K layer."""
    if not (isinstance(n, int) and isinstance(k, int)) or n < 1 or k < 16 or k % 16:
        raise ValueError(f"chunk_k: N must be >= 1 and K a positive multiple of 16 (got N={n}, K={k})")
    kc = _fill_chunk(n, k)
    if k % (256 * TP_DEGREE) == 0:
        while (k // TP_DEGREE) % kc:
            kc -= 256
    return kc


def num_chunks(n: int, k: int) -> int:
    kc = chunk_k(n, k)
    return (k + kc - 1) // kc
