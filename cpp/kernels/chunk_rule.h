// The K-chunk rule of every invariant path, from (N, K) alone: python/nvfp4/chunking.py states it and explains it;
// this is its C++ copy (tests/test_chunking.py compares the two through nvfp4_chunk_k). Host-only, no CUDA.
#pragma once
#include <cstdint>

namespace nvfp4 {

constexpr int kChunkReferenceSms = 132;  // the fill step's reference machine; never the running GPU's count
constexpr int kChunkMaxCount = 16;
constexpr int64_t kChunkTpDegree = 8;

inline int64_t chunk_k(int64_t N, int64_t K) {
  const int64_t tiles = (N + 127) / 128;
  const int64_t slots = 2LL * kChunkReferenceSms;
  const int64_t k256 = (K + 255) / 256 * 256;
  int64_t kc = k256;
  double best_eff = -1.0;
  for (int s = 1; s <= kChunkMaxCount; ++s) {
    int64_t c = ((K + s - 1) / s + 255) / 256 * 256;
    if (c < 512) c = 512;
    if (c > k256) c = k256;
    const int64_t splits = (K + c - 1) / c;
    if (splits != s) continue;  // this s is not reachable with multiples of 256; another s covers it
    const int64_t ctas = tiles * splits;
    const int64_t waves = (ctas + slots - 1) / slots;
    const double eff = double(ctas) / double(waves * slots) - 0.01 * (splits - 1);
    if (eff > best_eff + 1e-9) {
      best_eff = eff;
      kc = c;
    }
  }
  if (K % (256 * kChunkTpDegree) == 0) {  // row-parallel shards at TP 2, 4, 8 hold whole chunks
    while ((K / kChunkTpDegree) % kc != 0) kc -= 256;
  }
  return kc;
}

}  // namespace nvfp4
