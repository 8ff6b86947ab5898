// All (M, N, K) -> configuration choices of the SM100 (B200/GB200, sm_100a) NVFP4 GEMM live here, in plain C++
// (no CUDA/CUTLASS), so the host test can enumerate them through the C ABI.
//
// Batch invariance: invariant_config() takes (N, K) only -- M is not a parameter, so it cannot reach the choice.
// Every configuration uses the persistent data-parallel tile scheduler (static_assert in blockscaled_runner.cuh):
// one CTA (1SM) or one CTA pair (2SM) computes a whole output tile, walking K from the first k-tile to the last;
// the tile's position and the number of tiles (i.e. M) play no part in any element's reduction order.
#pragma once
#include <cstdint>

namespace nvfp4 {
namespace sm100 {

enum Config : int {
  k1Sm_128x128x256 = 0,  // KernelTmaWarpSpecialized1SmNvf4Sm100, MMA 128x128x256, cluster 1x1x1
  k2Sm_256x128x256 = 1,  // KernelTmaWarpSpecialized2SmNvf4Sm100, MMA 256x128x256, cluster 2x1x1
  k2Sm_256x256x256 = 2,  // KernelTmaWarpSpecialized2SmNvf4Sm100, MMA 256x256x256, cluster 2x1x1
  kNumConfigs = 3,
};

// K depth of every configuration's tile. The GEMM entry points take only K that is a multiple of it, so that no
// k-tile reads data or scale bytes past the operands (NvFp4Linear pads K with zero weights and zero scales).
constexpr int64_t kTileK = 256;

inline const char* config_name(int c) {
  switch (c) {
    case k1Sm_128x128x256: return "sm100_1sm_128x128x256_c1x1x1_persistent";
    case k2Sm_256x128x256: return "sm100_2sm_256x128x256_c2x1x1_persistent";
    case k2Sm_256x256x256: return "sm100_2sm_256x256x256_c2x1x1_persistent";
    default: return "invalid";
  }
}

// N at or below which the invariant mode uses 128-wide N tiles: with N/256 column tiles a 148-SM B200 would get
// at most 8 CTA pairs busy at decode-sized M, so narrow layers take twice as many column tiles.
constexpr int64_t kInvariantWideN = 2048;

// Invariant mode: a function of (N, K) only. (K does not change the choice today; it is a parameter so that a
// future fixed split-K count chosen from (N, K, SM count) can be added without touching M.)
inline Config invariant_config(int64_t N, int64_t /*K*/) {
  return N <= kInvariantWideN ? k2Sm_256x128x256 : k2Sm_256x256x256;
}

// Largest M served by the 1SM 128x128 configuration in fast mode (decode: one MMA tile covers the tokens; 2SM
// 256-row tiles would be mostly padding).
constexpr int64_t kFastSmallM = 128;

// Fast mode: M picks the MMA shape (1SM 128-row tiles for small M, 2SM 256-row tiles with clusters otherwise).
inline Config fast_config(int64_t M, int64_t N, int64_t K) {
  if (M <= kFastSmallM) return k1Sm_128x128x256;
  return invariant_config(N, K);
}

inline Config select_config(int64_t M, int64_t N, int64_t K, int invariant) {
  return invariant ? invariant_config(N, K) : fast_config(M, N, K);
}

}  // namespace sm100
}  // namespace nvfp4
