// All (M, N, K) -> configuration choices of the SM120 (RTX 50 / RTX PRO Blackwell, sm_120a) NVFP4 GEMM, in plain
// C++ so the host test can enumerate them through the C ABI. SM120 has no clusters (1x1x1) and no 2SM MMA: the
// block-scaled MMA is the warp-level mma.sync kind::mxf4nvf4 (SASS OMMA), fed by TMA, cooperative schedule (two
// consumer warpgroups split the CTA tile along M; each accumulates its rows over all of K in k-tile order).
//
// Batch invariance: invariant_config() takes (N, K) only -- M is not a parameter. Every configuration uses the
// persistent data-parallel tile scheduler (static_assert in ../sm100/blockscaled_runner.cuh).
#pragma once
#include <cstdint>

namespace nvfp4 {
namespace sm120 {

enum Config : int {
  kCoop_128x128x128 = 0,  // KernelTmaWarpSpecializedNvf4Sm120 (cooperative), tile 128x128x128, cluster 1x1x1
  kCoop_256x128x128 = 1,  // KernelTmaWarpSpecializedNvf4Sm120 (cooperative), tile 256x128x128, cluster 1x1x1
  kNumConfigs = 2,
};

// K depth of every configuration's tile. The GEMM entry points take only K that is a multiple of it, so that no
// k-tile reads data or scale bytes past the operands (NvFp4Linear pads K with zero weights and zero scales).
constexpr int64_t kTileK = 128;

inline const char* config_name(int c) {
  switch (c) {
    case kCoop_128x128x128: return "sm120_coop_128x128x128_c1x1x1_persistent";
    case kCoop_256x128x128: return "sm120_coop_256x128x128_c1x1x1_persistent";
    default: return "invalid";
  }
}

// Tile N is 128 in both: the block-scale atom covers 128 rows of B, and CUTLASS 4.2's SM120 SFB TMA does not build
// for a 64-wide N tile (static_assert "TMA requires CTA_Tile and SLayout top-level size equivalence").
//
// N above which the invariant mode uses 256-row tiles: for wide layers there are enough column tiles to fill the
// GPU even with few row tiles, and 256-row tiles read each weight tile half as often at large M. Narrow layers keep
// 128-row tiles (twice the row tiles at prefill, half the padding at decode).
constexpr int64_t kInvariantWideN = 4096;

// Invariant mode: a function of (N, K) only (K is unused today; kept for a future (N, K, SMs) split-K count).
inline Config invariant_config(int64_t N, int64_t /*K*/) {
  return N <= kInvariantWideN ? kCoop_128x128x128 : kCoop_256x128x128;
}

// Largest M for which fast mode uses 128-row tiles (decode and small batches: less padding along M).
constexpr int64_t kFastSmallM = 128;

inline Config fast_config(int64_t M, int64_t /*N*/, int64_t /*K*/) {
  return M <= kFastSmallM ? kCoop_128x128x128 : kCoop_256x128x128;
}

inline Config select_config(int64_t M, int64_t N, int64_t K, int invariant) {
  return invariant ? invariant_config(N, K) : fast_config(M, N, K);
}

}  // namespace sm120
}  // namespace nvfp4
