// All (M, N, K) -> kernel-configuration choices of the Hopper NVFP4 GEMM live here (one place, DeepGEMM style).
//
// Kernel family (see kernel.cuh): a CTA computes a 128-weight-row x BT-token tile of D^T = W * X^T with two
// consumer warpgroups (64 rows each), K walked in BK-wide tiles through a 4-stage cp.async pipeline.
//
// Batch invariance. The K reduction of every output is fixed by ONE number, the chunk length kc, which depends on
// (N, K, SM count) only: each chunk [c*kc, (c+1)*kc) is summed by a chain of k16 wgmmas starting from zero, and the
// chunk sums are added in chunk order to a zero-initialised fp32 total (0 + p0 + p1 + ...). Whether the chunks run
// in one CTA (registers) or in `splits` CTAs (one thread-block cluster reducing through distributed shared memory, or
// fp32 partials + an ordered reduction kernel) does not change a bit.
// The token tile BT (wgmma N) varies with M; the dev harness checks on the H100 that this changes no bit.
#pragma once
#include <cstdint>

namespace nvfp4 {
namespace sm90 {

struct Plan {
  int bt;          // token tile = wgmma N (8, 16, 32, 64 or 128)
  int kc;          // K chunk length (multiple of 256); the reduction order is fixed by it
  int splits;      // number of K chunks = ceil(K / kc)
  bool split_out;  // true: one CTA per (tile, chunk); dispatch.cu picks how the chunk sums are added in order
  bool ws;         // true: warp-specialised TMA kernel (ws_kernel.cuh, 128x128 tile) when the operands allow it
};

// Chunk length from (N, K, SM count) only. Why: small-M decode is bound by reading the weights once, so we want
// about 2 CTAs per SM (two fit by shared memory and registers for BT <= 32) with little wave-quantisation loss;
// N alone gives ceil(N/128) tiles, so K is cut into S chunks to reach that. Chunks are multiples of 256 (the
// decode kernel's K tile) and at least 512 long so each CTA keeps its pipeline busy for several tiles; at most 16.
inline int chunk_k(int64_t N, int64_t K, int num_sms) {
  const int64_t tiles = (N + 127) / 128;
  const int64_t slots = 2LL * num_sms;
  const int64_t k256 = (K + 255) / 256 * 256;
  int64_t best_kc = k256;
  double best_eff = -1.0;
  for (int s = 1; s <= 16; ++s) {
    int64_t kc = ((K + s - 1) / s + 255) / 256 * 256;
    if (kc < 512) kc = 512;
    if (kc > k256) kc = k256;
    const int64_t splits = (K + kc - 1) / kc;
    if (splits != s) continue;  // this s is not reachable with 256-multiples; another s covers it
    const int64_t ctas = tiles * splits;
    const int64_t waves = (ctas + slots - 1) / slots;
    // fraction of CTA slots busy, minus a small charge per extra split (partials traffic + reduction)
    const double eff = double(ctas) / double(waves * slots) - 0.01 * (splits - 1);
    if (eff > best_eff + 1e-9) {
      best_eff = eff;
      best_kc = kc;
    }
  }
  return static_cast<int>(best_kc);
}

// Largest M that uses the split (partials) path: above it the fp32 partials (splits*M*N*4 bytes) cost more than
// the parallelism gains; large M has enough token tiles to fill the GPU anyway.
constexpr int64_t kSplitMaxM = 64;

inline int token_tile(int64_t M) {
  // Smallest wgmma N that covers M (less wasted MMA work and activation traffic for decode); 128 for prefill
  // (two 64x128 warpgroup tiles per CTA: 128 fp32 accumulators + 64 chunk totals per thread fit in registers).
  if (M <= 8) return 8;
  if (M <= 16) return 16;
  if (M <= 32) return 32;
  if (M <= 64) return 64;
  return 128;
}

inline Plan make_plan(int64_t M, int64_t N, int64_t K, int invariant, int num_sms) {
  Plan p;
  p.bt = token_tile(M);
  p.kc = chunk_k(N, K, num_sms);
  if (!invariant && M > kSplitMaxM) {
    // Fast mode, many tokens: one chunk (no chunk adds); the tile grid already fills the GPU.
    p.kc = static_cast<int>((K + 255) / 256 * 256);
  }
  p.splits = static_cast<int>((K + p.kc - 1) / p.kc);
  p.split_out = (M <= kSplitMaxM) && p.splits > 1;
  // Above the split range every call uses the warp-specialised TMA kernel (same 128-token tile, same numerics:
  // the dev harness checks bitwise equality with the cp.async kernels on the H100). Why: it has no per-tile
  // __syncthreads, a 5-deep mbarrier pipeline fed by one TMA thread and conflict-free 16-byte weight reads.
  // dispatch.cu falls back to the cp.async kernel when TMA cannot describe the operands (K % 32 != 0, or
  // weights only 8-byte aligned).
  p.ws = M > kSplitMaxM;
  return p;
}

}  // namespace sm90
}  // namespace nvfp4
