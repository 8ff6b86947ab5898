// Host launcher template for one token tile BT; each gemm_btN.cu instantiates exactly one BT.
#pragma once
#include <cuda_runtime.h>

#include <atomic>

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

template <int BT, typename OutT, int MODE>
auto kernel_of() {
  return nvfp4_sm90_gemm_kernel<BT, TileK<BT>::value, TileStages<BT>::value, OutT, MODE>;
}
template <int BT>
constexpr int smem_bytes() {
  return Layout<BT, TileK<BT>::value, TileStages<BT>::value>::kTotal;
}

template <int BT, typename OutT, int MODE>
int prepare(int splits) {
  auto kernel = kernel_of<BT, OutT, MODE>();
  int rc = check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<BT>()),
                      "cudaFuncSetAttribute(nvfp4_sm90_gemm_kernel, max dynamic shared memory)");
  if (rc != NVFP4_OK || MODE != kSplitCluster || splits <= 8) return rc;
  return check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
                    "cudaFuncSetAttribute(nvfp4_sm90_gemm_kernel, non-portable cluster size)");
}

// Launch configuration of the tile-BT kernel; cluster_z > 0 makes the z-dimension CTAs clusters of cluster_z (the
// attribute lives in *cluster, which must outlive the configuration).
template <int BT>
cudaLaunchConfig_t launch_config(dim3 grid, int cluster_z, cudaLaunchAttribute* cluster, cudaStream_t stream) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(256, 1, 1);
  cfg.dynamicSmemBytes = smem_bytes<BT>();
  cfg.stream = stream;
  if (cluster_z > 0) {
    cluster->id = cudaLaunchAttributeClusterDimension;
    cluster->val.clusterDim.x = 1;
    cluster->val.clusterDim.y = 1;
    cluster->val.clusterDim.z = static_cast<unsigned>(cluster_z);
    cfg.attrs = cluster;
    cfg.numAttrs = 1;
  }
  return cfg;
}

template <int BT, typename OutT, int MODE>
int launch_one(const GemmParams& p, int splits, cudaStream_t stream) {
  int rc = prepare<BT, OutT, MODE>(splits);
  if (rc != NVFP4_OK) return rc;
  cudaLaunchAttribute cluster;
  const dim3 grid((p.M + BT - 1) / BT, (p.N + 127) / 128, MODE == kWholeK ? 1 : splits);
  const cudaLaunchConfig_t cfg = launch_config<BT>(grid, MODE == kSplitCluster ? splits : 0, &cluster, stream);
  return check_cuda(cudaLaunchKernelEx(&cfg, kernel_of<BT, OutT, MODE>(), p), "nvfp4_sm90_gemm_kernel launch");
}

template <int BT>
int launch_tile(const GemmParams& p, int out_dtype, int mode, int splits, cudaStream_t stream) {
  const bool bf16 = out_dtype == NVFP4_DTYPE_BF16;
  switch (mode) {
    case kSplitPartials:
      return bf16 ? launch_one<BT, __nv_bfloat16, kSplitPartials>(p, splits, stream)
                  : launch_one<BT, __half, kSplitPartials>(p, splits, stream);
    case kSplitCluster:
      return bf16 ? launch_one<BT, __nv_bfloat16, kSplitCluster>(p, splits, stream)
                  : launch_one<BT, __half, kSplitCluster>(p, splits, stream);
    default:
      return bf16 ? launch_one<BT, __nv_bfloat16, kWholeK>(p, splits, stream)
                  : launch_one<BT, __half, kWholeK>(p, splits, stream);
  }
}

// Occupancy queries cost host time, so they are cached per device and cluster size (they depend on nothing else:
// the bf16 and fp16 kernels use the same resources). Racing threads compute the same value.
template <int BT>
int occupancy_tile(int splits, int* ctas_per_sm, int* max_clusters) {
  constexpr int kDevices = 64;
  static std::atomic<int> cached_ctas[kDevices];
  static std::atomic<int> cached_clusters[kDevices][kMaxClusterSplits + 1];  // value + 1; 0 = not known yet
  NVFP4_REQUIRE(splits >= 1 && splits <= kMaxClusterSplits, "nvfp4_sm90: cluster of %d CTAs (1..%d)", splits,
                kMaxClusterSplits);
  int dev = 0;
  int rc = check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  if (rc != NVFP4_OK) return rc;
  const bool cache = dev >= 0 && dev < kDevices;
  int ctas = cache ? cached_ctas[dev].load(std::memory_order_relaxed) - 1 : -1;
  int clusters = cache ? cached_clusters[dev][splits].load(std::memory_order_relaxed) - 1 : -1;
  if (ctas < 0) {
    rc = prepare<BT, __nv_bfloat16, kSplitPartials>(splits);
    if (rc != NVFP4_OK) return rc;
    rc = check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel_of<BT, __nv_bfloat16, kSplitPartials>(),
                                                                  256, smem_bytes<BT>()),
                    "cudaOccupancyMaxActiveBlocksPerMultiprocessor(nvfp4_sm90_gemm_kernel)");
    if (rc != NVFP4_OK) return rc;
    if (cache) cached_ctas[dev].store(ctas + 1, std::memory_order_relaxed);
  }
  if (clusters < 0) {
    rc = prepare<BT, __nv_bfloat16, kSplitCluster>(splits);
    if (rc != NVFP4_OK) return rc;
    cudaLaunchAttribute cluster;
    const cudaLaunchConfig_t cfg = launch_config<BT>(dim3(1, 1, splits), splits, &cluster, nullptr);
    const cudaError_t err =
        cudaOccupancyMaxActiveClusters(&clusters, kernel_of<BT, __nv_bfloat16, kSplitCluster>(), &cfg);
    if (err != cudaSuccess) {
      // A cluster shape the device cannot schedule is an answer (0), not a failure; the error is not sticky.
      (void)cudaGetLastError();
      clusters = 0;
    }
    if (cache) cached_clusters[dev][splits].store(clusters + 1, std::memory_order_relaxed);
  }
  *ctas_per_sm = ctas;
  *max_clusters = clusters;
  return NVFP4_OK;
}

template <int BT>
TileEntry make_tile_entry() {
  return TileEntry{&launch_tile<BT>, &occupancy_tile<BT>};
}

}  // namespace sm90
}  // namespace nvfp4
