// All (M, N, K) -> configuration choices of the Hopper NVFP4 GEMM (one place, DeepGEMM style).
//
// Bits. Every output's K reduction is fixed by the chunk length kc = chunk_k(N, K) (../chunk_rule.h): from (N, K)
// alone, never from M or the GPU. The token tile, the split of a tile's chunks over CTAs (and how their sums are
// added), the fused or standalone activation quantizer and the number of SMs change no bit, so they are chosen here
// from M and the device to run fast. Fast mode (invariant = 0) at M > 64 uses one chunk (no chunk adds).
//
// Speed. Decode (M <= 64) reads every weight once: a tile of 128 rows should stream its K range with enough bytes in
// flight on every SM. Tiles that already cover the SMs walk all of K in one CTA; fewer tiles split their chunks over
// 2..16 CTAs, added in a thread-block cluster (one kernel) where the clusters fit in one wave, else through fp32
// partials and a second kernel. W4A4 activations are quantized by the standalone quantizer first, in the same C call
// (kFusedMaxM says why the fused quantizer is not the default).
#pragma once
#include <cstdint>

#include "../chunk_rule.h"
#include "kernel.cuh"

namespace nvfp4 {
namespace sm90 {

constexpr int64_t kSplitMaxM = 64;  // above: the prefill tile (128 tokens), whole K per CTA
// At most this many rows can be quantized inside the GEMM (the fused quantizer). It runs only where a test or
// benchmark forces it (nvfp4_sm90_set_fused(1)): every CTA quantizes its tile's rows over its K range itself, so a
// call does (weight tiles) x the quantizer's work, on three warps per SM. Measured on the H200 (bench/results/h200),
// with a fourth warp issuing the copies, the fused layer call took 1.7-2.2x the standalone quantizer + GEMM at M = 1
// and 3.5-5x at M = 16 on the llama preset shapes.
constexpr int64_t kFusedMaxM = 16;

inline int token_tile(int64_t M) {
  if (M <= 8) return 8;
  if (M <= 16) return 16;
  if (M <= 32) return 32;
  if (M <= 64) return 64;
  return 128;
}

// Chunks per CTA the split modes can hold in registers for a token tile (kernel.cuh, Tile<BT>::kMaxCpc).
inline int max_chunks_per_cta(int bt) {
  switch (bt) {
    case 8: return Tile<8>::kMaxCpc;
    case 16: return Tile<16>::kMaxCpc;
    case 32: return Tile<32>::kMaxCpc;
    case 64: return Tile<64>::kMaxCpc;
    default: return Tile<128>::kMaxCpc;
  }
}

enum Reduce : int { kReduceNone = 0, kReduceCluster = 1, kReduceKernel = 2 };  // NVFP4_SM90_REDUCE_* of nvfp4.h

struct Plan {
  int bt;       // token tile = wgmma N
  int kc;       // chunk length; fixes the reduction order
  int nchunks;  // ceil(K / kc)
  int splits;   // CTAs per tile along K (1: whole K per CTA)
  int cpc;      // chunks per CTA when split
  int reduce;   // Reduce
  bool fused;   // activations quantized inside the GEMM
};

// What the planner needs to know about the device (and what tests may pretend): SMs, CTAs per SM of a tile's kernel,
// and how many clusters of a size fit at once.
struct DeviceFacts {
  int sms;
  int (*occupancy)(int bt, int cluster, int* ctas_per_sm, int* max_clusters);  // NVFP4_OK or an error
};

// forced_reduce: 0 = automatic, kReduceCluster or kReduceKernel (tests, benchmarks); forced_fused: 0 automatic,
// 1 fused wherever it can serve, 2 never. Returns NVFP4_OK or an error status (message set).
int make_plan(int64_t M, int64_t N, int64_t K, bool quantize, bool invariant, int64_t kc_override, bool partials_out,
              const DeviceFacts& dev, int forced_reduce, int forced_fused, Plan* plan);

// The grouped GEMM (mixture-of-experts: S rows sorted by expert, E experts of N x K): whole K per CTA with the chunk
// rule of chunk_k(N, K), in invariant and fast mode alike, so every row gets the bits of an invariant per-expert
// call. The token tile follows the mean rows per active expert; the grid is an upper bound on the groups' tiles.
struct GroupedPlan {
  int bt;         // token tile
  int kc;         // chunk length
  int64_t slots;  // token tiles launched per 128-row weight tile
  bool fused;     // activations quantized inside the GEMM
};
GroupedPlan make_grouped_plan(int64_t S, int64_t E, int64_t N, int64_t K, bool quantize, int forced_fused);

}  // namespace sm90
}  // namespace nvfp4
