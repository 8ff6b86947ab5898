// C ABI of the Hopper NVFP4 linear layer: argument checks, the plan (config.h), the launches. Compile for sm_90a only.
#include <cuda.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "../quantize_activations.h"
#include "config.h"
#include "kernel.cuh"
#include "nvfp4/nvfp4.h"
#include "status.h"

namespace nvfp4 {
namespace sm90 {

namespace {

TileEntry tile_for(int bt) {
  switch (bt) {
    case 8: return tile_bt8();
    case 16: return tile_bt16();
    case 32: return tile_bt32();
    case 64: return tile_bt64();
    default: return tile_bt128();
  }
}

int tile_occupancy(int bt, int cluster, int* ctas_per_sm, int* max_clusters) {
  return tile_for(bt).occupancy(cluster, ctas_per_sm, max_clusters);
}

}  // namespace

int make_plan(int64_t M, int64_t N, int64_t K, bool quantize, bool invariant, int64_t kc_override, bool partials_out,
              const DeviceFacts& dev, int forced_reduce, int forced_fused, Plan* plan) {
  Plan p;
  p.bt = token_tile(M);
  if (kc_override != 0) {
    NVFP4_REQUIRE(kc_override > 0 && kc_override % 256 == 0 && kc_override <= INT32_MAX,
                  "nvfp4_sm90: chunk_k must be 0 (the library's rule) or a positive multiple of 256 (got %lld)",
                  (long long)kc_override);
    p.kc = static_cast<int>(kc_override);
  } else if (!invariant && M > kSplitMaxM) {
    p.kc = static_cast<int>((K + 255) / 256 * 256);  // fast mode, many tokens: one chunk, no chunk adds
  } else {
    p.kc = static_cast<int>(chunk_k(N, K));
  }
  p.nchunks = static_cast<int>((K + p.kc - 1) / p.kc);
  p.splits = 1;
  p.reduce = kReduceNone;
  const int64_t tiles_n = (N + 127) / 128;
  const int64_t tiles = ((M + p.bt - 1) / p.bt) * tiles_n;
  if (partials_out) {  // every chunk's sum to the caller: one CTA per chunk
    p.splits = p.nchunks;
    p.reduce = kReduceKernel;
  } else if (M <= kSplitMaxM && p.nchunks > 1 && tiles < dev.sms) {
    int ctas_per_sm = 0, unused = 0;
    int rc = dev.occupancy(p.bt, 1, &ctas_per_sm, &unused);
    if (rc != NVFP4_OK) return rc;
    const int64_t slots = static_cast<int64_t>(dev.sms) * (ctas_per_sm > 0 ? ctas_per_sm : 1);
    int cands[3], ncand = 0;  // CTAs per tile, most first
    for (int cpc = 1; cpc <= max_chunks_per_cta(p.bt); cpc *= 2) {
      const int s = (p.nchunks + cpc - 1) / cpc;
      if (s >= 2 && (ncand == 0 || cands[ncand - 1] != s)) cands[ncand++] = s;
    }
    int fitting = 0;  // the most CTAs per tile that still fit in one wave
    for (int i = 0; i < ncand && !fitting; ++i)
      if (tiles * cands[i] <= slots) fitting = cands[i];
    int cluster = 0;  // the most CTAs per tile whose clusters all fit at once
    if (forced_reduce != kReduceKernel) {
      for (int i = 0; i < ncand && !cluster; ++i) {
        if (cands[i] > kMaxClusterSplits || (forced_reduce == kReduceNone && tiles * cands[i] > slots)) continue;
        int c = 0, max_clusters = 0;
        rc = dev.occupancy(p.bt, cands[i], &c, &max_clusters);
        if (rc != NVFP4_OK) return rc;
        if (max_clusters >= tiles || (forced_reduce == kReduceCluster && max_clusters > 0)) cluster = cands[i];
      }
      NVFP4_REQUIRE(forced_reduce != kReduceCluster || cluster > 0 || ncand == 0,
                    "nvfp4_sm90: split reduction forced to clusters, but this device cannot schedule a cluster of the "
                    "%d-token kernel for %d chunks",
                    p.bt, p.nchunks);
    }
    if (cluster) {
      p.splits = cluster;
      p.reduce = kReduceCluster;
    } else if (ncand > 0 && (forced_reduce == kReduceKernel || tiles * 2 < dev.sms)) {
      // Too few tiles to stream the weights from half the SMs: split, and add the chunk sums in a second kernel.
      p.splits = fitting ? fitting : cands[ncand - 1];
      p.reduce = kReduceKernel;
    }
  }
  p.cpc = (p.nchunks + p.splits - 1) / p.splits;
  p.fused = quantize && M <= kFusedMaxM && p.reduce != kReduceKernel && forced_fused == 1;
  *plan = p;
  return NVFP4_OK;
}

GroupedPlan make_grouped_plan(int64_t S, int64_t E, int64_t N, int64_t K, bool quantize, int forced_fused) {
  GroupedPlan p;
  const int64_t active = E < S ? E : S;  // at most this many groups have rows
  p.bt = token_tile((S + active - 1) / active);
  p.kc = static_cast<int>(chunk_k(N, K));
  // Each active group's last tile may be partial: sum of ceil(rows_e / bt) <= (S + active * (bt - 1)) / bt.
  p.slots = (S + active * (p.bt - 1)) / p.bt;
  p.fused = quantize && p.bt <= kFusedMaxM && forced_fused == 1;
  return p;
}

}  // namespace sm90
}  // namespace nvfp4

namespace {

using namespace nvfp4;
using namespace nvfp4::sm90;

// Test and benchmark switches (nvfp4.h): none changes a bit.
std::atomic<int> g_split_reduce{0};
std::atomic<int> g_fused{0};
std::atomic<int> g_sm_count{0};
std::atomic<int> g_pdl{0};

int check_device() {
  const int sm = current_device_sm();
  if (sm < 0) return NVFP4_ERR_CUDA;
  if (sm != 90)
    return fail(NVFP4_ERR_UNSUPPORTED,
                "nvfp4_sm90: the sm_90a kernels run on compute capability 9.0 only; the current device is sm_%d", sm);
  return NVFP4_OK;
}

int device_facts(DeviceFacts* dev) {
  dev->occupancy = &tile_occupancy;
  dev->sms = g_sm_count.load(std::memory_order_relaxed);
  if (dev->sms > 0) return NVFP4_OK;
  int d = 0;
  int rc = check_cuda(cudaGetDevice(&d), "cudaGetDevice");
  if (rc != NVFP4_OK) return rc;
  return check_cuda(cudaDeviceGetAttribute(&dev->sms, cudaDevAttrMultiProcessorCount, d),
                    "cudaDeviceGetAttribute(SM count)");
}

int check_shape(const char* fn, int64_t M, int64_t N, int64_t K, int act) {
  NVFP4_REQUIRE(M >= 1, "%s: M must be >= 1 (got %lld)", fn, (long long)M);
  NVFP4_REQUIRE(N >= 1, "%s: N must be >= 1 (got %lld)", fn, (long long)N);
  NVFP4_REQUIRE(K >= 16 && K % 16 == 0, "%s: K must be a positive multiple of 16 (got %lld)", fn, (long long)K);
  NVFP4_REQUIRE(M <= INT32_MAX && N <= INT32_MAX - 256 && K <= INT32_MAX - 4096,
                "%s: M, N, K must fit in 31 bits (got %lld, %lld, %lld)", fn, (long long)M, (long long)N, (long long)K);
  NVFP4_REQUIRE(act == NVFP4_SM90_ACT_BF16 || act == NVFP4_SM90_ACT_QUANT_PER_TOKEN || act == NVFP4_SM90_ACT_QUANT_STATIC,
                "%s: act must be NVFP4_SM90_ACT_BF16 (0), _QUANT_PER_TOKEN (1) or _QUANT_STATIC (2) (got %d)", fn, act);
  return NVFP4_OK;
}

// The activations and their scale (every entry point that takes x).
int check_operand(const char* fn, const void* x, int x_dtype, int64_t x_row_stride, int64_t K, int act,
                  const float* static_scale) {
  NVFP4_REQUIRE(x != nullptr, "%s: x must not be NULL", fn);
  NVFP4_REQUIRE(x_dtype == NVFP4_DTYPE_BF16 || x_dtype == NVFP4_DTYPE_FP16,
                "%s: x_dtype must be NVFP4_DTYPE_BF16 (0) or NVFP4_DTYPE_FP16 (1) (got %d)", fn, x_dtype);
  NVFP4_REQUIRE(act != NVFP4_SM90_ACT_BF16 || x_dtype == NVFP4_DTYPE_BF16,
                "%s: a bf16 activation operand (act = NVFP4_SM90_ACT_BF16) must be bf16 (got x_dtype %d)", fn, x_dtype);
  NVFP4_REQUIRE(x_row_stride >= K, "%s: x_row_stride must be >= K (got %lld, K=%lld)", fn, (long long)x_row_stride,
                (long long)K);
  NVFP4_REQUIRE(x_row_stride % 8 == 0, "%s: x_row_stride must be a multiple of 8 elements (16 bytes) (got %lld)", fn,
                (long long)x_row_stride);
  NVFP4_REQUIRE(aligned_to(x, 16), "%s: x must be 16-byte aligned", fn);
  NVFP4_REQUIRE(act != NVFP4_SM90_ACT_QUANT_STATIC || static_scale != nullptr,
                "%s: static_scale must not be NULL with act = NVFP4_SM90_ACT_QUANT_STATIC", fn);
  return NVFP4_OK;
}

// Shape check, plan and device check: what every entry point that depends on the device starts from.
int resolve(const char* fn, int64_t M, int64_t N, int64_t K, int act, int invariant, int64_t chunk_k_override,
            bool partials_out, Plan* plan) {
  int rc = check_shape(fn, M, N, K, act);
  if (rc != NVFP4_OK) return rc;
  NVFP4_REQUIRE(invariant == 0 || invariant == 1, "%s: invariant must be 0 or 1 (got %d)", fn, invariant);
  rc = check_device();
  if (rc != NVFP4_OK) return rc;
  DeviceFacts dev;
  rc = device_facts(&dev);
  if (rc != NVFP4_OK) return rc;
  return make_plan(M, N, K, act != NVFP4_SM90_ACT_BF16, invariant == 1, chunk_k_override, partials_out, dev,
                   g_split_reduce.load(std::memory_order_relaxed), g_fused.load(std::memory_order_relaxed), plan);
}

// Workspace: [fp32 chunk partials][bf16 quantized activations][fp32 per-row alpha], each 256-byte aligned.
struct WorkspaceLayout {
  size_t partials, dequant, alpha, total;
};
size_t align256(size_t v) { return (v + 255) / 256 * 256; }
WorkspaceLayout workspace_layout(const Plan& plan, int act, bool partials_out, int64_t M, int64_t N, int64_t K) {
  WorkspaceLayout w{0, 0, 0, 0};
  const bool quantize_apart = act != NVFP4_SM90_ACT_BF16 && !plan.fused;
  const size_t partials = plan.reduce == kReduceKernel && !partials_out ? size_t(plan.nchunks) * M * N * 4 : 0;
  w.dequant = align256(partials);
  w.alpha = w.dequant + (quantize_apart ? align256(size_t(M) * K * 2) : 0);
  w.total = w.alpha + (quantize_apart ? align256(size_t(M) * 4) : 0);
  if (w.total == 0) w.alpha = w.dequant = 0;
  return w;
}

typedef CUresult (*EncodeTiledFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                  const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                  CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

int get_encoder(EncodeTiledFn* fn) {
  static std::atomic<EncodeTiledFn> cached{nullptr};
  EncodeTiledFn f = cached.load(std::memory_order_acquire);
  if (f == nullptr) {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult q;
    int rc = check_cuda(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &q),
                        "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled)");
    if (rc != NVFP4_OK) return rc;
    if (q != cudaDriverEntryPointSuccess || ptr == nullptr)
      return fail(NVFP4_ERR_CUDA, "cuTensorMapEncodeTiled not available from the driver");
    f = reinterpret_cast<EncodeTiledFn>(ptr);
    cached.store(f, std::memory_order_release);
  }
  *fn = f;
  return NVFP4_OK;
}

// Activations [M][row_stride] (bf16, or the fused quantizer's raw bf16/fp16) as TMA boxes of 64 k x BT tokens with
// 128B swizzle (the wgmma B layout); reads past M and K are zero.
int encode_activations(CUtensorMap* tm, const void* act, int dtype, int64_t row_stride, int64_t M, int64_t K, int bt) {
  EncodeTiledFn fn;
  int rc = get_encoder(&fn);
  if (rc != NVFP4_OK) return rc;
  cuuint64_t dims[2] = {static_cast<cuuint64_t>(K), static_cast<cuuint64_t>(M)};
  cuuint64_t strides[1] = {static_cast<cuuint64_t>(row_stride) * 2};
  cuuint32_t box[2] = {64, static_cast<cuuint32_t>(bt)};
  cuuint32_t es[2] = {1, 1};
  CUresult r = fn(tm, dtype == NVFP4_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, const_cast<void*>(act), dims, strides, box, es,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return fail(NVFP4_ERR_CUDA, "cuTensorMapEncodeTiled(activations) failed: %d", static_cast<int>(r));
  return NVFP4_OK;
}

size_t prepacked_bytes(int64_t N, int64_t K) {
  return static_cast<size_t>((N + kSlabRows - 1) / kSlabRows) * ((K + kKGroup - 1) / kKGroup) * kGroupBytes;
}

// Grouped workspace: [bf16 dequantized activations, S x K][fp32 row decode scales, S] when the standalone quantizer
// runs; empty otherwise.
struct GroupedWorkspace {
  size_t scale, total;
};
GroupedWorkspace grouped_workspace(const GroupedPlan& plan, int act, int64_t S, int64_t K) {
  if (act == NVFP4_SM90_ACT_BF16 || plan.fused) return GroupedWorkspace{0, 0};
  const size_t scale = align256(size_t(S) * K * 2);
  return GroupedWorkspace{scale, scale + align256(size_t(S) * 4)};
}

int resolve_grouped(const char* fn, int64_t S, int64_t E, int64_t N, int64_t K, int act, GroupedPlan* plan) {
  int rc = check_shape(fn, S, N, K, act);
  if (rc != NVFP4_OK) return rc;
  NVFP4_REQUIRE(E >= 1 && E <= kMaxGroups, "%s: num_experts must be in 1..%d (got %lld)", fn, kMaxGroups,
                (long long)E);
  rc = check_device();
  if (rc != NVFP4_OK) return rc;
  *plan = make_grouped_plan(S, E, N, K, act != NVFP4_SM90_ACT_BF16, g_fused.load(std::memory_order_relaxed));
  return NVFP4_OK;
}

}  // namespace

extern "C" {

int nvfp4_sm90_prepacked_bytes(int64_t N, int64_t K, size_t* bytes) {
  NVFP4_REQUIRE(bytes != nullptr, "nvfp4_sm90_prepacked_bytes: bytes must not be NULL");
  NVFP4_REQUIRE(N >= 1 && K >= 16 && K % 16 == 0, "nvfp4_sm90_prepacked_bytes: N >= 1, K a positive multiple of 16");
  *bytes = prepacked_bytes(N, K);
  return NVFP4_OK;
}

int nvfp4_sm90_set_split_reduce(int mode) {
  NVFP4_REQUIRE(mode == 0 || mode == NVFP4_SM90_REDUCE_CLUSTER || mode == NVFP4_SM90_REDUCE_KERNEL,
                "nvfp4_sm90_set_split_reduce: mode must be 0 (automatic), %d (cluster) or %d (kernel) (got %d)",
                NVFP4_SM90_REDUCE_CLUSTER, NVFP4_SM90_REDUCE_KERNEL, mode);
  g_split_reduce.store(mode, std::memory_order_relaxed);
  return NVFP4_OK;
}

int nvfp4_sm90_set_fused(int mode) {
  NVFP4_REQUIRE(mode >= 0 && mode <= 2, "nvfp4_sm90_set_fused: mode must be 0 (automatic), 1 (wherever it serves) or "
                "2 (never) (got %d)", mode);
  g_fused.store(mode, std::memory_order_relaxed);
  return NVFP4_OK;
}

int nvfp4_sm90_set_sm_count(int sms) {
  NVFP4_REQUIRE(sms >= 0 && sms <= 4096, "nvfp4_sm90_set_sm_count: sms must be 0 (the device's) or 1..4096 (got %d)",
                sms);
  g_sm_count.store(sms, std::memory_order_relaxed);
  return NVFP4_OK;
}

int nvfp4_sm90_set_pdl(int on) {
  NVFP4_REQUIRE(on == 0 || on == 1, "nvfp4_sm90_set_pdl: on must be 0 or 1 (got %d)", on);
  g_pdl.store(on, std::memory_order_relaxed);
  return NVFP4_OK;
}

int nvfp4_sm90_occupancy(int token_tile, int cluster_size, int* ctas_per_sm, int* max_clusters) {
  NVFP4_REQUIRE(ctas_per_sm && max_clusters, "nvfp4_sm90_occupancy: output pointers must not be NULL");
  NVFP4_REQUIRE(token_tile == 8 || token_tile == 16 || token_tile == 32 || token_tile == 64 || token_tile == 128,
                "nvfp4_sm90_occupancy: token_tile must be 8, 16, 32, 64 or 128 (got %d)", token_tile);
  NVFP4_REQUIRE(cluster_size >= 1 && cluster_size <= kMaxClusterSplits,
                "nvfp4_sm90_occupancy: cluster_size must be in 1..%d (got %d)", kMaxClusterSplits, cluster_size);
  int rc = check_device();
  if (rc != NVFP4_OK) return rc;
  return tile_for(token_tile).occupancy(cluster_size, ctas_per_sm, max_clusters);
}

int nvfp4_sm90_linear_plan(int64_t M, int64_t N, int64_t K, int act, int invariant, int64_t chunk_k, int* token_tile,
                           int* chunk_k_out, int* nchunks, int* splits, int* reduce, int* fused) {
  NVFP4_REQUIRE(token_tile && chunk_k_out && nchunks && splits && reduce && fused,
                "nvfp4_sm90_linear_plan: output pointers must not be NULL");
  Plan plan;
  const int rc = resolve("nvfp4_sm90_linear_plan", M, N, K, act, invariant, chunk_k, false, &plan);
  if (rc != NVFP4_OK) return rc;
  *token_tile = plan.bt;
  *chunk_k_out = plan.kc;
  *nchunks = plan.nchunks;
  *splits = plan.splits;
  *reduce = plan.reduce;
  *fused = plan.fused ? 1 : 0;
  return NVFP4_OK;
}

int nvfp4_sm90_linear_workspace_size(int64_t M, int64_t N, int64_t K, int act, int invariant, int64_t chunk_k,
                                     int partials_out, size_t* bytes) {
  NVFP4_REQUIRE(bytes != nullptr, "nvfp4_sm90_linear_workspace_size: bytes must not be NULL");
  Plan plan;
  const int rc = resolve("nvfp4_sm90_linear_workspace_size", M, N, K, act, invariant, chunk_k, partials_out != 0, &plan);
  if (rc != NVFP4_OK) return rc;
  *bytes = workspace_layout(plan, act, partials_out != 0, M, N, K).total;
  return NVFP4_OK;
}

int nvfp4_sm90_linear(const void* x, int x_dtype, int64_t x_row_stride, int act, const float* static_scale,
                      const float* alpha, int alpha_per_row, int64_t M, int64_t N, int64_t K, const uint8_t* w_prepacked,
                      const void* bias, void* out, int64_t out_row_stride, int invariant, int64_t chunk_k,
                      float* chunk_partials, void* workspace, size_t workspace_bytes, void* stream) {
  const char* fn = "nvfp4_sm90_linear";
  int rc = check_shape(fn, M, N, K, act);
  if (rc != NVFP4_OK) return rc;
  rc = check_operand(fn, x, x_dtype, x_row_stride, K, act, static_scale);
  if (rc != NVFP4_OK) return rc;
  NVFP4_REQUIRE(alpha != nullptr && aligned_to(alpha, 4), "%s: alpha must be a 4-byte aligned device pointer", fn);
  NVFP4_REQUIRE(act == NVFP4_SM90_ACT_BF16 || alpha_per_row == 0,
                "%s: with a quantizing act, alpha is the weight's global scale (one value, alpha_per_row = 0)", fn);
  NVFP4_REQUIRE(w_prepacked != nullptr && aligned_to(w_prepacked, 16), "%s: w_prepacked must be 16-byte aligned", fn);
  NVFP4_REQUIRE(bias == nullptr || aligned_to(bias, 2), "%s: bias must be 2-byte aligned", fn);
  NVFP4_REQUIRE(chunk_partials != nullptr || (out != nullptr && aligned_to(out, 2)),
                "%s: out must be a 2-byte aligned device pointer", fn);
  NVFP4_REQUIRE(chunk_partials == nullptr || aligned_to(chunk_partials, 4), "%s: chunk_partials must be 4-byte aligned",
                fn);
  NVFP4_REQUIRE(chunk_partials != nullptr || out_row_stride >= N, "%s: out_row_stride must be >= N (got %lld, N=%lld)",
                fn, (long long)out_row_stride, (long long)N);
  NVFP4_REQUIRE(x_row_stride <= INT64_MAX / M && out_row_stride <= INT64_MAX / M, "%s: row strides overflow 64 bits",
                fn);

  Plan plan;
  const bool partials_out = chunk_partials != nullptr;
  rc = resolve(fn, M, N, K, act, invariant, chunk_k, partials_out, &plan);
  if (rc != NVFP4_OK) return rc;
  const WorkspaceLayout ws = workspace_layout(plan, act, partials_out, M, N, K);
  NVFP4_REQUIRE(workspace_bytes >= ws.total,
                "%s: workspace_bytes must be >= nvfp4_sm90_linear_workspace_size() = %zu (got %zu)", fn, ws.total,
                workspace_bytes);
  NVFP4_REQUIRE(ws.total == 0 || (workspace != nullptr && aligned_to(workspace, 256)),
                "%s: workspace must be a 256-byte aligned device pointer (needs %zu bytes)", fn, ws.total);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  uint8_t* wsb = static_cast<uint8_t*>(workspace);

  GemmParams p = {};
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.kc = plan.kc;
  p.nchunks = plan.nchunks;
  p.cpc = plan.cpc;
  p.kg_total = static_cast<int>((K + kKGroup - 1) / kKGroup);
  p.w = w_prepacked;
  p.alpha = alpha;
  p.alpha_per_row = alpha_per_row ? 1 : 0;
  p.bias = bias;
  p.out = out;
  p.out_stride = out_row_stride;
  p.partial = partials_out ? chunk_partials : reinterpret_cast<float*>(wsb);
  p.x = x;
  p.x_stride = x_row_stride;
  p.static_scale = act == NVFP4_SM90_ACT_QUANT_STATIC ? static_scale : nullptr;

  LaunchArgs la = {};
  la.mode = plan.reduce == kReduceCluster ? kSplitCluster : plan.reduce == kReduceKernel ? kSplitPartials : kWholeK;
  la.act = plan.fused ? kActQuant : kActTma;
  la.out_dtype = x_dtype;
  la.splits = plan.splits;
  const void* operand = x;
  int64_t operand_stride = x_row_stride;
  if (act != NVFP4_SM90_ACT_BF16 && !plan.fused) {
    // The standalone quantizer: exact dequantized bf16 activations and the per-row alpha, then the bf16 GEMM.
    auto* dequant = reinterpret_cast<__nv_bfloat16*>(wsb + ws.dequant);
    auto* row_alpha = reinterpret_cast<float*>(wsb + ws.alpha);
    rc = nvfp4_quantize_activations(x, x_dtype, M, K, x_row_stride, p.static_scale, row_alpha, alpha, nullptr, nullptr,
                                    dequant, stream);
    if (rc != NVFP4_OK) return rc;
    operand = dequant;
    operand_stride = K;
    p.alpha = row_alpha;
    p.alpha_per_row = 1;
    la.pdl = p.after_prior = g_pdl.load(std::memory_order_relaxed);
  }
  CUtensorMap tm = {};
  rc = encode_activations(&tm, operand, la.act == kActTma ? NVFP4_DTYPE_BF16 : x_dtype, operand_stride, M, K, plan.bt);
  if (rc != NVFP4_OK) return rc;
  rc = tile_for(plan.bt).launch(p, la, &tm, s);
  if (rc != NVFP4_OK || la.mode != kSplitPartials || partials_out) return rc;
  const int64_t total = M * N;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  NVFP4_REQUIRE(blocks <= INT32_MAX, "%s: M*N too large for the split path", fn);
  // A plain launch: programmatic dependent launch of the reduction measured slower on the H100 (docs/benchmarks.md).
  if (x_dtype == NVFP4_DTYPE_BF16) {
    nvfp4_sm90_reduce_kernel<__nv_bfloat16><<<static_cast<unsigned>(blocks), threads, 0, s>>>(p);
  } else {
    nvfp4_sm90_reduce_kernel<__half><<<static_cast<unsigned>(blocks), threads, 0, s>>>(p);
  }
  return check_cuda(cudaGetLastError(), "nvfp4_sm90_reduce_kernel launch");
}

int nvfp4_sm90_grouped_plan(int64_t rows, int num_experts, int64_t N, int64_t K, int act, int* token_tile,
                            int* chunk_k_out, int64_t* slots, int* fused) {
  NVFP4_REQUIRE(token_tile && chunk_k_out && slots && fused, "nvfp4_sm90_grouped_plan: output pointers must not be NULL");
  GroupedPlan plan;
  const int rc = resolve_grouped("nvfp4_sm90_grouped_plan", rows, num_experts, N, K, act, &plan);
  if (rc != NVFP4_OK) return rc;
  *token_tile = plan.bt;
  *chunk_k_out = plan.kc;
  *slots = plan.slots;
  *fused = plan.fused ? 1 : 0;
  return NVFP4_OK;
}

int nvfp4_sm90_grouped_workspace_size(int64_t rows, int num_experts, int64_t N, int64_t K, int act, size_t* bytes) {
  NVFP4_REQUIRE(bytes != nullptr, "nvfp4_sm90_grouped_workspace_size: bytes must not be NULL");
  GroupedPlan plan;
  const int rc = resolve_grouped("nvfp4_sm90_grouped_workspace_size", rows, num_experts, N, K, act, &plan);
  if (rc != NVFP4_OK) return rc;
  *bytes = grouped_workspace(plan, act, rows, K).total;
  return NVFP4_OK;
}

int nvfp4_sm90_grouped_linear(const void* x, int x_dtype, int64_t x_row_stride, int act, const float* static_scales,
                              const float* alphas, int64_t rows, int num_experts, const int64_t* expert_offsets,
                              int64_t N, int64_t K, const uint8_t* w_prepacked, void* out, int64_t out_row_stride,
                              void* workspace, size_t workspace_bytes, void* stream) {
  const char* fn = "nvfp4_sm90_grouped_linear";
  GroupedPlan plan;
  int rc = resolve_grouped(fn, rows, num_experts, N, K, act, &plan);
  if (rc != NVFP4_OK) return rc;
  rc = check_operand(fn, x, x_dtype, x_row_stride, K, act, static_scales);
  if (rc != NVFP4_OK) return rc;
  NVFP4_REQUIRE(alphas != nullptr && aligned_to(alphas, 4), "%s: alphas must be a 4-byte aligned device pointer", fn);
  NVFP4_REQUIRE(expert_offsets != nullptr && aligned_to(expert_offsets, 8),
                "%s: expert_offsets must be an 8-byte aligned device pointer", fn);
  NVFP4_REQUIRE(w_prepacked != nullptr && aligned_to(w_prepacked, 16), "%s: w_prepacked must be 16-byte aligned", fn);
  NVFP4_REQUIRE(out != nullptr && aligned_to(out, 2), "%s: out must be a 2-byte aligned device pointer", fn);
  NVFP4_REQUIRE(out_row_stride >= N, "%s: out_row_stride must be >= N (got %lld, N=%lld)", fn,
                (long long)out_row_stride, (long long)N);
  NVFP4_REQUIRE(x_row_stride <= INT64_MAX / rows && out_row_stride <= INT64_MAX / rows,
                "%s: row strides overflow 64 bits", fn);
  const GroupedWorkspace ws = grouped_workspace(plan, act, rows, K);
  NVFP4_REQUIRE(workspace_bytes >= ws.total,
                "%s: workspace_bytes must be >= nvfp4_sm90_grouped_workspace_size() = %zu (got %zu)", fn, ws.total,
                workspace_bytes);
  NVFP4_REQUIRE(ws.total == 0 || (workspace != nullptr && aligned_to(workspace, 256)),
                "%s: workspace must be a 256-byte aligned device pointer (needs %zu bytes)", fn, ws.total);

  GemmParams p = {};
  p.M = static_cast<int>(rows);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.kc = plan.kc;
  p.nchunks = static_cast<int>((K + plan.kc - 1) / plan.kc);
  p.cpc = p.nchunks;
  p.kg_total = static_cast<int>((K + kKGroup - 1) / kKGroup);
  p.w = w_prepacked;
  p.alpha = alphas;
  p.out = out;
  p.out_stride = out_row_stride;
  p.x = x;
  p.x_stride = x_row_stride;
  p.static_scale = act == NVFP4_SM90_ACT_QUANT_STATIC ? static_scales : nullptr;
  p.group_offsets = expert_offsets;
  p.num_groups = num_experts;
  p.w_group_stride = static_cast<int64_t>(prepacked_bytes(N, K));

  LaunchArgs la = {};
  la.mode = kWholeK;
  la.act = plan.fused ? kActQuant : kActTma;
  la.out_dtype = x_dtype;
  la.splits = 1;
  la.grouped_slots = plan.slots;
  const void* operand = x;
  int64_t operand_stride = x_row_stride;
  if (act != NVFP4_SM90_ACT_BF16 && !plan.fused) {
    // The standalone quantizer writes each row's decode scale (no multiplier: the kernel multiplies it by the row's
    // expert alpha with the quantizer's row_alpha, so the product is the per-expert call's).
    uint8_t* wsb = static_cast<uint8_t*>(workspace);
    auto* dequant = reinterpret_cast<__nv_bfloat16*>(wsb);
    auto* row_scale = reinterpret_cast<float*>(wsb + ws.scale);
    rc = quantize_rows(x, x_dtype, rows, K, x_row_stride, p.static_scale, row_scale, nullptr,
                       p.static_scale ? expert_offsets : nullptr, num_experts, nullptr, nullptr, dequant, stream);
    if (rc != NVFP4_OK) return rc;
    operand = dequant;
    operand_stride = K;
    p.row_scale = row_scale;
    la.pdl = p.after_prior = g_pdl.load(std::memory_order_relaxed);
  }
  CUtensorMap tm = {};
  rc = encode_activations(&tm, operand, la.act == kActTma ? NVFP4_DTYPE_BF16 : x_dtype, operand_stride, rows, K,
                          plan.bt);
  if (rc != NVFP4_OK) return rc;
  return tile_for(plan.bt).launch(p, la, &tm, static_cast<cudaStream_t>(stream));
}

}  // extern "C"
