// Host launcher template for one token tile BT; each gemm_btN.cu instantiates exactly one BT.
#pragma once
#include <cuda_runtime.h>

#include "kernel.cuh"
#include "nvfp4/nvfp4.h"
#include "status.h"

namespace nvfp4 {
namespace sm90 {

// K tile: 256 for decode tiles (fewer, larger cp.async batches per barrier; the tile is weight-dominated),
// 128 for BT >= 64 (keeps 4 stages of activations + weights within shared memory).
template <int BT>
struct TileK {
  static constexpr int value = BT <= 32 ? 256 : 128;
};
// Pipeline depth: 3 for decode tiles (measured on H100 2026-11-24, CUDA-graph M=1: 3 stages 27.4 us vs 4 stages
// 29.2 us at 8192x8192, 160.9 vs 200.8 us at 57344x8192; 2 CTAs/SM either way), 4 for BT >= 64 (BK = 128 tiles
// are half as deep). Dev builds may force one value with -DNVFP4_SM90_STAGES=n to compare.
template <int BT>
struct TileStages {
#ifdef NVFP4_SM90_STAGES
  static constexpr int value = NVFP4_SM90_STAGES;
#else
  static constexpr int value = BT <= 32 ? 3 : 4;
#endif
};

template <int BT, typename OutT, bool SPLIT>
int launch_one(const GemmParams& p, int splits, cudaStream_t stream) {
  constexpr int BK = TileK<BT>::value;
  constexpr int kStages = TileStages<BT>::value;
  using L = Layout<BT, BK, kStages>;
  auto kernel = nvfp4_sm90_gemm_kernel<BT, BK, kStages, OutT, SPLIT>;
  int rc = check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal),
                      "cudaFuncSetAttribute(nvfp4_sm90_gemm_kernel)");
  if (rc != NVFP4_OK) return rc;
  dim3 grid((p.M + BT - 1) / BT, (p.N + 127) / 128, SPLIT ? splits : 1);
  kernel<<<grid, 256, L::kTotal, stream>>>(p);
  return check_cuda(cudaGetLastError(), "nvfp4_sm90_gemm_kernel launch");
}

template <int BT>
int launch_bt_impl(const GemmParams& p, int out_dtype, bool split, int splits, cudaStream_t stream) {
  if (out_dtype == NVFP4_DTYPE_BF16) {
    return split ? launch_one<BT, __nv_bfloat16, true>(p, splits, stream)
                 : launch_one<BT, __nv_bfloat16, false>(p, splits, stream);
  }
  return split ? launch_one<BT, __half, true>(p, splits, stream) : launch_one<BT, __half, false>(p, splits, stream);
}

}  // namespace sm90
}  // namespace nvfp4
