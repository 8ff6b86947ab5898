// C ABI of the Hopper NVFP4 GEMM: argument checks, plan (config.h), launches. Compile for sm_90a only.
#include <cuda_runtime.h>

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

}  // namespace

extern "C" {

int nvfp4_sm90_gemm_workspace_size(int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes) {
  NVFP4_REQUIRE(bytes != nullptr, "nvfp4_sm90_gemm_workspace_size: bytes must not be NULL");
  int rc = check_shape(M, N, K);
  if (rc != NVFP4_OK) return rc;
  int sms = 0;
  rc = device_sm_count(&sms);
  if (rc != NVFP4_OK) return rc;
  *bytes = workspace_bytes(M, N, K, invariant, sms);
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

  int sms = 0;
  rc = device_sm_count(&sms);
  if (rc != NVFP4_OK) return rc;
  const Plan plan = make_plan(M, N, K, invariant, sms);
  const size_t need = plan.split_out ? static_cast<size_t>(plan.splits) * M * N * 4u : 0u;
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
  switch (plan.bt) {
    case 8: rc = launch_bt8(p, out_dtype, plan.split_out, plan.splits, s); break;
    case 16: rc = launch_bt16(p, out_dtype, plan.split_out, plan.splits, s); break;
    case 32: rc = launch_bt32(p, out_dtype, plan.split_out, plan.splits, s); break;
    case 64: rc = launch_bt64(p, out_dtype, plan.split_out, plan.splits, s); break;
    default: rc = launch_bt128(p, out_dtype, plan.split_out, plan.splits, s); break;
  }
  if (rc != NVFP4_OK || !plan.split_out) return rc;
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
