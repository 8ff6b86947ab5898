// Host launcher of one token tile's kernels; each gemm_btN.cu instantiates exactly one BT.
#pragma once
#include <cuda_runtime.h>

#include <atomic>

#include "kernel.cuh"
#include "nvfp4/nvfp4.h"
#include "status.h"

namespace nvfp4 {
namespace sm90 {

template <int BT, typename OutT, int MODE, int ACT, typename XT>
int launch_kernel(const GemmParams& p, const LaunchArgs& a, const CUtensorMap* tm, cudaStream_t stream) {
  const int splits = a.splits;
  auto kernel = nvfp4_sm90_kernel<BT, OutT, MODE, ACT, XT>;
  int rc = check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile<BT>::kTotal),
                      "cudaFuncSetAttribute(nvfp4_sm90_kernel, max dynamic shared memory)");
  if (rc != NVFP4_OK) return rc;
  if (MODE == kSplitCluster && splits > 8) {
    rc = check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
                    "cudaFuncSetAttribute(nvfp4_sm90_kernel, non-portable cluster size)");
    if (rc != NVFP4_OK) return rc;
  }
  // The grouped GEMM launches grouped_slots token tiles per weight tile (an upper bound on the groups' tiles).
  const int64_t tiles_m = a.grouped_slots > 0 ? a.grouped_slots : (p.M + BT - 1) / BT;
  const int64_t tiles = tiles_m * ((p.N + 127) / 128);
  if (tiles > INT32_MAX) return fail(NVFP4_ERR_INVALID_ARGUMENT, "nvfp4_sm90_linear: too many tiles");
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(tiles), 1, MODE == kWholeK ? 1 : splits);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = Tile<BT>::kTotal;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  unsigned nattrs = 0;
  if (MODE == kSplitCluster) {
    attrs[nattrs].id = cudaLaunchAttributeClusterDimension;
    attrs[nattrs].val.clusterDim.x = 1;
    attrs[nattrs].val.clusterDim.y = 1;
    attrs[nattrs].val.clusterDim.z = static_cast<unsigned>(splits);
    ++nattrs;
  }
  if (a.pdl) {
    attrs[nattrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[nattrs].val.programmaticStreamSerializationAllowed = 1;
    ++nattrs;
  }
  cfg.attrs = nattrs ? attrs : nullptr;
  cfg.numAttrs = nattrs;
  return check_cuda(cudaLaunchKernelEx(&cfg, kernel, p, *tm), "nvfp4_sm90_kernel launch");
}

template <int BT, typename OutT, int ACT, typename XT>
int launch_mode(const GemmParams& p, const LaunchArgs& a, const CUtensorMap* tm, cudaStream_t stream) {
  switch (a.mode) {
    case kSplitCluster:
      if constexpr (BT <= 64) return launch_kernel<BT, OutT, kSplitCluster, ACT, XT>(p, a, tm, stream);
      break;
    case kSplitPartials:
      if constexpr (ACT == kActTma) return launch_kernel<BT, OutT, kSplitPartials, ACT, XT>(p, a, tm, stream);
      break;
    default:
      return launch_kernel<BT, OutT, kWholeK, ACT, XT>(p, a, tm, stream);
  }
  return fail(NVFP4_ERR_UNSUPPORTED, "nvfp4_sm90_linear: no kernel for token tile %d, mode %d, activation source %d",
              BT, a.mode, a.act);
}

template <int BT>
int launch_tile(const GemmParams& p, const LaunchArgs& a, const CUtensorMap* tm, cudaStream_t stream) {
  const bool bf16 = a.out_dtype == NVFP4_DTYPE_BF16;
  if (a.act == kActQuant) {
    if constexpr (BT <= 16) {
      return bf16 ? launch_mode<BT, __nv_bfloat16, kActQuant, __nv_bfloat16>(p, a, tm, stream)
                  : launch_mode<BT, __half, kActQuant, __half>(p, a, tm, stream);
    }
    return fail(NVFP4_ERR_UNSUPPORTED, "nvfp4_sm90_linear: the fused quantizer has no %d-token kernel", BT);
  }
  return bf16 ? launch_mode<BT, __nv_bfloat16, kActTma, __nv_bfloat16>(p, a, tm, stream)
              : launch_mode<BT, __half, kActTma, __nv_bfloat16>(p, a, tm, stream);
}

// Occupancy queries cost host time, so they are cached per device and cluster size (the bf16 and fp16 kernels, and
// the activation sources, use the same shared memory; the fused kernels are not larger in registers than the 2-CTA
// bound). Racing threads compute the same value.
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
  constexpr int kMode = BT <= 64 ? kSplitCluster : kWholeK;
  auto kernel = nvfp4_sm90_kernel<BT, __nv_bfloat16, kMode, kActTma, __nv_bfloat16>;
  if (ctas < 0 || clusters < 0) {
    rc = check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tile<BT>::kTotal),
                    "cudaFuncSetAttribute(nvfp4_sm90_kernel, max dynamic shared memory)");
    if (rc != NVFP4_OK) return rc;
  }
  if (ctas < 0) {
    rc = check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, kThreads, Tile<BT>::kTotal),
                    "cudaOccupancyMaxActiveBlocksPerMultiprocessor(nvfp4_sm90_kernel)");
    if (rc != NVFP4_OK) return rc;
    if (cache) cached_ctas[dev].store(ctas + 1, std::memory_order_relaxed);
  }
  if (clusters < 0) {
    clusters = 0;
    if (BT <= 64) {
      if (splits > 8) (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(1, 1, splits);
      cfg.blockDim = dim3(kThreads, 1, 1);
      cfg.dynamicSmemBytes = Tile<BT>::kTotal;
      cudaLaunchAttribute cluster;
      cluster.id = cudaLaunchAttributeClusterDimension;
      cluster.val.clusterDim.x = 1;
      cluster.val.clusterDim.y = 1;
      cluster.val.clusterDim.z = static_cast<unsigned>(splits);
      cfg.attrs = &cluster;
      cfg.numAttrs = 1;
      if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
        // A cluster shape the device cannot schedule is an answer (0), not a failure; the error is not sticky.
        (void)cudaGetLastError();
        clusters = 0;
      }
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
