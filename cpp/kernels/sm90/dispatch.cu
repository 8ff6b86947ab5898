// C ABI of the Hopper NVFP4 GEMM: argument checks, plan (config.h), launches. Compile for sm_90a only.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "config.h"
#include "kernel.cuh"
#include "ws_kernel.cuh"
#include "nvfp4/nvfp4.h"
#include "status.h"

namespace {

using namespace nvfp4;
using namespace nvfp4::sm90;

int device_sm_count(int* sms) {
  int dev = 0;
  int rc = check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  if (rc != NVFP4_OK) return rc;
  return check_cuda(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute(SM count)");
}

int check_shape(int64_t M, int64_t N, int64_t K) {
  NVFP4_REQUIRE(M >= 1, "nvfp4_sm90_gemm: M must be >= 1 (got %lld)", (long long)M);
  NVFP4_REQUIRE(N >= 1, "nvfp4_sm90_gemm: N must be >= 1 (got %lld)", (long long)N);
  NVFP4_REQUIRE(K >= 16 && K % 16 == 0, "nvfp4_sm90_gemm: K must be a positive multiple of 16 (got %lld)", (long long)K);
  NVFP4_REQUIRE(M <= INT32_MAX && N <= INT32_MAX - 256 && K <= INT32_MAX - 4096,
                "nvfp4_sm90_gemm: M, N, K must fit in 31 bits (got %lld, %lld, %lld)", (long long)M, (long long)N,
                (long long)K);
  NVFP4_REQUIRE((M + 7) / 8 <= INT32_MAX && (N + 127) / 128 <= 65535,
                "nvfp4_sm90_gemm: N must be <= 65535*128 (got %lld)", (long long)N);
  return NVFP4_OK;
}

// nvfp4_sm90_set_split_reduce: 0 = automatic, else forces NVFP4_SM90_REDUCE_CLUSTER or _KERNEL (tests, benchmarks).
std::atomic<int> g_split_reduce{0};

TileEntry tile_for(int bt) {
  switch (bt) {
    case 8: return tile_bt8();
    case 16: return tile_bt16();
    case 32: return tile_bt32();
    case 64: return tile_bt64();
    default: return tile_bt128();
  }
}

// How the split chunk sums are added (NVFP4_SM90_REDUCE_*); the bits are the same either way, so this may depend on
// M and on the device. Automatic: the cluster (one kernel, no workspace) only where its schedule cannot be slower
// than the plain grid's, by what the H100 showed (bench/results/h100-2026-11-24-cluster/):
//  - every cluster fits at once (tiles <= max_clusters). CTAs of a cluster leave together, so a second wave of
//    clusters waits for whole clusters: 6144x4096 at M = 64, 48 clusters of 4 for 30 places, 39.7 vs 35.8 us;
//    4096x4096 at M = 1, 32 clusters of 8 for 30 places, 14.2 vs 9.6 us;
//  - the plain grid already doubles CTAs up on SMs (CTAs > (ctas_per_sm - 1) * SMs). Clusters are placed by
//    GPC, so a grid that the plain launch spreads one CTA per SM may get two per SM in one GPC: 1000x8192 at
//    M = 1, 8 clusters of 16, 9.3 vs 7.2 us.
// Where both hold, the cluster saves the second launch and its dependency gap (6144x4096 at M = 1 in a Python
// process: 16.0 vs 16.4 us).
int split_reduce(const Plan& plan, int64_t M, int64_t N, int sms, int* reduce) {
  *reduce = NVFP4_SM90_REDUCE_NONE;
  if (!plan.split_out) return NVFP4_OK;
  const int forced = g_split_reduce.load(std::memory_order_relaxed);
  if (forced == NVFP4_SM90_REDUCE_KERNEL || plan.splits > kMaxClusterSplits) {
    *reduce = NVFP4_SM90_REDUCE_KERNEL;
    return NVFP4_OK;
  }
  int ctas_per_sm = 0, max_clusters = 0;
  const int rc = tile_for(plan.bt).occupancy(plan.splits, &ctas_per_sm, &max_clusters);
  if (rc != NVFP4_OK) return rc;
  if (forced == NVFP4_SM90_REDUCE_CLUSTER) {
    NVFP4_REQUIRE(max_clusters > 0,
                  "nvfp4_sm90_gemm: split reduction forced to clusters, but this device cannot schedule a cluster "
                  "of %d CTAs of the %d-token kernel",
                  plan.splits, plan.bt);
    *reduce = NVFP4_SM90_REDUCE_CLUSTER;
    return NVFP4_OK;
  }
  const int64_t tiles = ((M + plan.bt - 1) / plan.bt) * ((N + 127) / 128);
  const bool one_wave_of_clusters = tiles <= max_clusters;
  const bool plain_grid_doubles_up = tiles * plan.splits > static_cast<int64_t>(ctas_per_sm - 1) * sms;
  *reduce = one_wave_of_clusters && plain_grid_doubles_up ? NVFP4_SM90_REDUCE_CLUSTER : NVFP4_SM90_REDUCE_KERNEL;
  return NVFP4_OK;
}

// Shape check, plan (config.h) and split reduction for the current device: what every entry point starts from.
int resolve(int64_t M, int64_t N, int64_t K, int invariant, Plan* plan, int* reduce) {
  int rc = check_shape(M, N, K);
  if (rc != NVFP4_OK) return rc;
  int sms = 0;
  rc = device_sm_count(&sms);
  if (rc != NVFP4_OK) return rc;
  *plan = make_plan(M, N, K, invariant, sms);
  return split_reduce(*plan, M, N, sms, reduce);
}

size_t partials_bytes(const Plan& plan, int reduce, int64_t M, int64_t N) {
  return reduce == NVFP4_SM90_REDUCE_KERNEL ? static_cast<size_t>(plan.splits) * M * N * 4u : 0u;
}

}  // namespace

extern "C" {

int nvfp4_sm90_set_split_reduce(int mode) {
  NVFP4_REQUIRE(mode == 0 || mode == NVFP4_SM90_REDUCE_CLUSTER || mode == NVFP4_SM90_REDUCE_KERNEL,
                "nvfp4_sm90_set_split_reduce: mode must be 0 (automatic), %d (cluster) or %d (kernel) (got %d)",
                NVFP4_SM90_REDUCE_CLUSTER, NVFP4_SM90_REDUCE_KERNEL, mode);
  g_split_reduce.store(mode, std::memory_order_relaxed);
  return NVFP4_OK;
}

int nvfp4_sm90_occupancy(int token_tile, int cluster_size, int* ctas_per_sm, int* max_clusters) {
  NVFP4_REQUIRE(ctas_per_sm && max_clusters, "nvfp4_sm90_occupancy: output pointers must not be NULL");
  NVFP4_REQUIRE(token_tile == 8 || token_tile == 16 || token_tile == 32 || token_tile == 64 || token_tile == 128,
                "nvfp4_sm90_occupancy: token_tile must be 8, 16, 32, 64 or 128 (got %d)", token_tile);
  NVFP4_REQUIRE(cluster_size >= 1 && cluster_size <= kMaxClusterSplits,
                "nvfp4_sm90_occupancy: cluster_size must be in 1..%d (got %d)", kMaxClusterSplits, cluster_size);
  return tile_for(token_tile).occupancy(cluster_size, ctas_per_sm, max_clusters);
}

int nvfp4_sm90_gemm_plan(int64_t M, int64_t N, int64_t K, int invariant, int* token_tile, int* chunk_k,
                         int* splits, int* reduce) {
  NVFP4_REQUIRE(token_tile && chunk_k && splits && reduce, "nvfp4_sm90_gemm_plan: output pointers must not be NULL");
  NVFP4_REQUIRE(invariant == 0 || invariant == 1, "nvfp4_sm90_gemm_plan: invariant must be 0 or 1 (got %d)",
                invariant);
  Plan plan;
  const int rc = resolve(M, N, K, invariant, &plan, reduce);
  if (rc != NVFP4_OK) return rc;
  *token_tile = plan.bt;
  *chunk_k = plan.kc;
  *splits = plan.splits;
  return NVFP4_OK;
}

int nvfp4_sm90_gemm_workspace_size(int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes) {
  NVFP4_REQUIRE(bytes != nullptr, "nvfp4_sm90_gemm_workspace_size: bytes must not be NULL");
  Plan plan;
  int reduce = 0;
  const int rc = resolve(M, N, K, invariant, &plan, &reduce);
  if (rc != NVFP4_OK) return rc;
  *bytes = partials_bytes(plan, reduce, M, N);
  return NVFP4_OK;
}

int nvfp4_sm90_gemm(const void* act, int64_t act_row_stride, int64_t M, int64_t N, int64_t K,
                    const uint8_t* w_packed, const uint8_t* w_scales, const float* alpha, int alpha_per_row,
                    const void* bias, void* out, int out_dtype, int64_t out_row_stride, int invariant,
                    void* workspace, size_t workspace_bytes_given, void* stream) {
  int rc = check_shape(M, N, K);
  if (rc != NVFP4_OK) return rc;
  NVFP4_REQUIRE(act != nullptr, "nvfp4_sm90_gemm: act must not be NULL");
  NVFP4_REQUIRE(w_packed != nullptr, "nvfp4_sm90_gemm: w_packed must not be NULL");
  NVFP4_REQUIRE(w_scales != nullptr, "nvfp4_sm90_gemm: w_scales must not be NULL");
  NVFP4_REQUIRE(alpha != nullptr, "nvfp4_sm90_gemm: alpha must not be NULL");
  NVFP4_REQUIRE(out != nullptr, "nvfp4_sm90_gemm: out must not be NULL");
  NVFP4_REQUIRE(out_dtype == NVFP4_DTYPE_BF16 || out_dtype == NVFP4_DTYPE_FP16,
                "nvfp4_sm90_gemm: out_dtype must be NVFP4_DTYPE_BF16 (0) or NVFP4_DTYPE_FP16 (1) (got %d)", out_dtype);
  NVFP4_REQUIRE(act_row_stride >= K, "nvfp4_sm90_gemm: act_row_stride must be >= K (got %lld, K=%lld)",
                (long long)act_row_stride, (long long)K);
  NVFP4_REQUIRE(act_row_stride % 8 == 0,
                "nvfp4_sm90_gemm: act_row_stride must be a multiple of 8 elements (16 bytes) (got %lld)",
                (long long)act_row_stride);
  NVFP4_REQUIRE(aligned_to(act, 16), "nvfp4_sm90_gemm: act must be 16-byte aligned");
  NVFP4_REQUIRE(aligned_to(w_packed, 8), "nvfp4_sm90_gemm: w_packed must be 8-byte aligned");
  NVFP4_REQUIRE(aligned_to(w_scales, 16), "nvfp4_sm90_gemm: w_scales must be 16-byte aligned");
  NVFP4_REQUIRE(aligned_to(alpha, 4), "nvfp4_sm90_gemm: alpha must be 4-byte aligned");
  NVFP4_REQUIRE(bias == nullptr || aligned_to(bias, 2), "nvfp4_sm90_gemm: bias must be 2-byte aligned");
  NVFP4_REQUIRE(aligned_to(out, 2), "nvfp4_sm90_gemm: out must be 2-byte aligned");
  NVFP4_REQUIRE(out_row_stride >= N, "nvfp4_sm90_gemm: out_row_stride must be >= N (got %lld, N=%lld)",
                (long long)out_row_stride, (long long)N);
  NVFP4_REQUIRE(act_row_stride <= INT64_MAX / (M > 0 ? M : 1) && out_row_stride <= INT64_MAX / (M > 0 ? M : 1),
                "nvfp4_sm90_gemm: row strides overflow 64-bit offsets");
  NVFP4_REQUIRE(invariant == 0 || invariant == 1, "nvfp4_sm90_gemm: invariant must be 0 or 1 (got %d)", invariant);

  Plan plan;
  int reduce = 0;
  rc = resolve(M, N, K, invariant, &plan, &reduce);
  if (rc != NVFP4_OK) return rc;
  const size_t need = partials_bytes(plan, reduce, M, N);
  NVFP4_REQUIRE(workspace_bytes_given >= need,
                "nvfp4_sm90_gemm: workspace_bytes must be >= nvfp4_sm90_gemm_workspace_size() = %zu (got %zu)", need,
                workspace_bytes_given);
  NVFP4_REQUIRE(need == 0 || workspace != nullptr, "nvfp4_sm90_gemm: workspace must not be NULL (needs %zu bytes)",
                need);
  NVFP4_REQUIRE(need == 0 || aligned_to(workspace, 16), "nvfp4_sm90_gemm: workspace must be 16-byte aligned");

  GemmParams p;
  p.act = static_cast<const __nv_bfloat16*>(act);
  p.act_stride = act_row_stride;
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.w = w_packed;
  p.scales = w_scales;
  p.G4 = static_cast<int>((K + 63) / 64);
  p.alpha = alpha;
  p.alpha_per_row = alpha_per_row ? 1 : 0;
  p.bias = bias;
  p.out = out;
  p.out_stride = out_row_stride;
  p.kc = plan.kc;
  p.partial = static_cast<float*>(workspace);
  cudaStream_t s = static_cast<cudaStream_t>(stream);

  if (plan.ws && ws_supported(p)) return launch_ws_bt128(p, out_dtype, s);
  const int mode = reduce == NVFP4_SM90_REDUCE_CLUSTER  ? kSplitCluster
                   : reduce == NVFP4_SM90_REDUCE_KERNEL ? kSplitPartials
                                                        : kWholeK;
  rc = tile_for(plan.bt).launch(p, out_dtype, mode, plan.splits, s);
  if (rc != NVFP4_OK || mode != kSplitPartials) return rc;
  const int64_t total = M * N;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  NVFP4_REQUIRE(blocks <= INT32_MAX, "nvfp4_sm90_gemm: M*N too large for the split path");
  // A plain launch. Programmatic dependent launch was tried and removed: on the H100 the split path was ~0.3 us per
  // call slower with it (6144x4096, M = 1: 15.57 vs 15.29 us in nvfp4_bench; bench/results/h100-2026-11-24-gaps/).
  if (out_dtype == NVFP4_DTYPE_BF16) {
    nvfp4_sm90_reduce_kernel<__nv_bfloat16><<<static_cast<unsigned>(blocks), threads, 0, s>>>(p, plan.splits);
  } else {
    nvfp4_sm90_reduce_kernel<__half><<<static_cast<unsigned>(blocks), threads, 0, s>>>(p, plan.splits);
  }
  return check_cuda(cudaGetLastError(), "nvfp4_sm90_reduce_kernel launch");
}

}  // extern "C"
