// C-ABI bodies shared by the SM100 and SM120 NVFP4 GEMM entry points (cpp/kernels/sm1x0/dispatch.cu): argument
// checks, the configuration table walk, the device check, the host-only check. Plain C++ + the CUDA runtime API;
// no CUTLASS include (the configurations live in their own TUs).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

#include "blockscaled_common.h"
#include "nvfp4/nvfp4.h"
#include "status.h"

namespace nvfp4 {
namespace blackwell {

struct ConfigEntry {
  const char* name;
  RunFn run;
  CheckFn check;
};

struct Family {
  const char* prefix;        // "nvfp4_sm100_gemm"
  int required_sm;           // 100 / 120: the only compute capability the sm_100a / sm_120a cubins run on
  const ConfigEntry* table;
  int num_configs;
  int64_t tile_k;            // K depth of every configuration's tile (config.h kTileK)
  int (*select)(int64_t M, int64_t N, int64_t K, int invariant);
};

inline int check_shape(const Family& f, int64_t M, int64_t N, int64_t K) {
  NVFP4_REQUIRE(M >= 1 && M <= INT32_MAX, "%s: M must be in [1, 2^31) (got %lld)", f.prefix, (long long)M);
  NVFP4_REQUIRE(N >= 8 && N % 8 == 0 && N <= INT32_MAX,
                "%s: N must be a positive multiple of 8 (the TMA store writes 16-byte rows; NvFp4Linear pads N at "
                "load time) (got %lld)", f.prefix, (long long)N);
  NVFP4_REQUIRE(K >= 32 && K % 32 == 0 && K <= INT32_MAX,
                "%s: K must be a positive multiple of 32 (16-byte packed rows for TMA; NvFp4Linear pads K with zero "
                "weights and scales) (got %lld)", f.prefix, (long long)K);
  return NVFP4_OK;
}

// A launch reads whole k-tiles: with K a multiple of the tile K no k-tile reaches past the packed rows or the
// swizzled scale buffers, so no byte the caller did not write (TMA out-of-bounds fill included) enters a product.
inline int check_whole_k_tiles(const Family& f, int64_t K) {
  NVFP4_REQUIRE(K % f.tile_k == 0,
                "%s: K must be a multiple of the tile K %lld for a launch (no partial k-tile may read past the "
                "operands; NvFp4Linear pads K with zero weights and zero scales) (got %lld)", f.prefix,
                (long long)f.tile_k, (long long)K);
  return NVFP4_OK;
}

inline int check_invariant(const Family& f, int invariant) {
  NVFP4_REQUIRE(invariant == 0 || invariant == 1, "%s: invariant must be 0 or 1 (got %d)", f.prefix, invariant);
  return NVFP4_OK;
}

// The device must be exactly the one the arch-specific ('a') cubins were built for: sm_100a code does not run on
// 10.3 (B300) and sm_120a code does not run on 12.1 (GB10).
inline int require_device(const Family& f, int* device, int* sm_count) {
  int rc = check_cuda(cudaGetDevice(device), f.prefix);
  if (rc != NVFP4_OK) return rc;
  const int sm = current_device_sm();
  if (sm < 0) return NVFP4_ERR_CUDA;
  if (sm != f.required_sm) {
    return fail(NVFP4_ERR_UNSUPPORTED, "%s: this library holds sm_%da code, which runs on compute capability %d.%d "
                "only; the current device is %d.%d", f.prefix, f.required_sm, f.required_sm / 10, f.required_sm % 10,
                sm / 10, sm % 10);
  }
  return check_cuda(cudaDeviceGetAttribute(sm_count, cudaDevAttrMultiProcessorCount, *device), f.prefix);
}

inline int config_index(const Family& f, int64_t M, int64_t N, int64_t K, int invariant, int* index) {
  NVFP4_REQUIRE(index != nullptr, "%s_select_config: index must not be NULL", f.prefix);
  int rc = check_invariant(f, invariant);
  if (rc == NVFP4_OK) rc = check_shape(f, M, N, K);
  if (rc != NVFP4_OK) return rc;
  *index = f.select(M, N, K, invariant);
  return NVFP4_OK;
}

inline int copy_name(const char* name, char* buf, size_t capacity) {
  const size_t len = std::strlen(name);
  if (buf != nullptr && capacity > 0) {
    std::snprintf(buf, capacity, "%s", name);
  }
  return static_cast<int>(len);
}

inline int host_check(const Family& f, int index, int64_t M, int64_t N, int64_t K, int out_dtype, int sm_count,
                      int* can_implement, size_t* workspace_bytes, int* layout_ok) {
  NVFP4_REQUIRE(index >= 0 && index < f.num_configs, "%s_host_check: config index must be in [0, %d) (got %d)",
                f.prefix, f.num_configs, index);
  NVFP4_REQUIRE(can_implement && workspace_bytes && layout_ok, "%s_host_check: output pointers must not be NULL",
                f.prefix);
  NVFP4_REQUIRE(sm_count >= 1, "%s_host_check: sm_count must be >= 1 (got %d)", f.prefix, sm_count);
  NVFP4_REQUIRE(out_dtype == NVFP4_DTYPE_BF16 || out_dtype == NVFP4_DTYPE_FP16,
                "%s_host_check: out_dtype must be 0 (bf16) or 1 (fp16) (got %d)", f.prefix, out_dtype);
  NVFP4_REQUIRE(M >= 1 && N >= 1 && K >= 16 && K % 16 == 0, "%s_host_check: need M, N >= 1 and K a multiple of 16",
                f.prefix);
  GemmArgs a;
  a.M = M, a.N = N, a.K = K;
  a.out_row_stride = N;
  a.out_dtype = out_dtype;
  a.sm_count = sm_count;
  // Non-null, suitably aligned dummy addresses: CUTLASS's host checks look at alignment, never dereference.
  a.a_packed = a.b_packed = a.a_scales = a.b_scales = reinterpret_cast<const uint8_t*>(uintptr_t(1) << 20);
  a.alpha = reinterpret_cast<const float*>(uintptr_t(1) << 20);
  a.alpha_per_row = 1;
  a.out = reinterpret_cast<void*>(uintptr_t(1) << 21);
  HostCheck out;
  int rc = f.table[index].check(a, &out);
  if (rc != NVFP4_OK) return rc;
  *can_implement = out.can_implement;
  *workspace_bytes = out.workspace_bytes;
  *layout_ok = out.layout_matches_python;
  return NVFP4_OK;
}

inline int workspace_size(const Family& f, int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes) {
  NVFP4_REQUIRE(bytes != nullptr, "%s_workspace_size: bytes must not be NULL", f.prefix);
  int index = 0;
  int rc = config_index(f, M, N, K, invariant, &index);
  if (rc == NVFP4_OK) rc = check_whole_k_tiles(f, K);
  if (rc != NVFP4_OK) return rc;
  int device = 0, sms = 0;
  rc = require_device(f, &device, &sms);
  if (rc != NVFP4_OK) return rc;
  int can = 0, layout_ok = 0;
  return host_check(f, index, M, N, K, NVFP4_DTYPE_BF16, sms, &can, bytes, &layout_ok);
}

inline int gemm(const Family& f, const uint8_t* act_packed, const uint8_t* act_scales, int64_t M, int64_t N,
                int64_t K, const uint8_t* w_packed, const uint8_t* w_scales, const float* alpha, int alpha_per_row,
                const void* bias, void* out, int out_dtype, int64_t out_row_stride, int invariant, void* workspace,
                size_t workspace_bytes, void* stream) {
  int index = 0;
  int rc = config_index(f, M, N, K, invariant, &index);
  if (rc == NVFP4_OK) rc = check_whole_k_tiles(f, K);
  if (rc != NVFP4_OK) return rc;
  NVFP4_REQUIRE(act_packed && act_scales && w_packed && w_scales && alpha && out,
                "%s: act_packed, act_scales, w_packed, w_scales, alpha and out must not be NULL", f.prefix);
  NVFP4_REQUIRE(out_dtype == NVFP4_DTYPE_BF16 || out_dtype == NVFP4_DTYPE_FP16,
                "%s: out_dtype must be NVFP4_DTYPE_BF16 (0) or NVFP4_DTYPE_FP16 (1) (got %d)", f.prefix, out_dtype);
  NVFP4_REQUIRE(alpha_per_row == 0 || alpha_per_row == 1, "%s: alpha_per_row must be 0 or 1 (got %d)", f.prefix,
                alpha_per_row);
  NVFP4_REQUIRE(out_row_stride >= N && out_row_stride % 8 == 0 && out_row_stride <= INT64_MAX / M,
                "%s: out_row_stride must be >= N and a multiple of 8 (got %lld, N=%lld)", f.prefix,
                (long long)out_row_stride, (long long)N);
  // TMA loads and stores and the vectorised bias loads need 16-byte aligned addresses (alpha is read per element).
  NVFP4_REQUIRE(aligned_to(act_packed, 16), "%s: act_packed must be 16-byte aligned (got %p)", f.prefix, act_packed);
  NVFP4_REQUIRE(aligned_to(w_packed, 16), "%s: w_packed must be 16-byte aligned (got %p)", f.prefix, w_packed);
  NVFP4_REQUIRE(aligned_to(act_scales, 16), "%s: act_scales must be 16-byte aligned (got %p)", f.prefix, act_scales);
  NVFP4_REQUIRE(aligned_to(w_scales, 16), "%s: w_scales must be 16-byte aligned (got %p)", f.prefix, w_scales);
  NVFP4_REQUIRE(aligned_to(out, 16), "%s: out must be 16-byte aligned (got %p)", f.prefix, out);
  NVFP4_REQUIRE(bias == nullptr || aligned_to(bias, 16), "%s: bias must be 16-byte aligned (got %p)", f.prefix, bias);
  NVFP4_REQUIRE(aligned_to(alpha, 4), "%s: alpha must be 4-byte aligned (got %p)", f.prefix, alpha);
  int device = 0, sms = 0;
  rc = require_device(f, &device, &sms);
  if (rc != NVFP4_OK) return rc;
  GemmArgs a;
  a.M = M, a.N = N, a.K = K;
  a.a_packed = act_packed, a.a_scales = act_scales, a.b_packed = w_packed, a.b_scales = w_scales;
  a.alpha = alpha, a.alpha_per_row = alpha_per_row, a.bias = bias;
  a.out = out, a.out_row_stride = out_row_stride, a.out_dtype = out_dtype;
  a.workspace = workspace, a.workspace_bytes = workspace_bytes, a.stream = stream, a.sm_count = sms;
  a.device_id = device;  // CUTLASS's hw_info: the device the launch runs on, not device 0
  return f.table[index].run(a);
}

}  // namespace blackwell
}  // namespace nvfp4

// Defines the extern "C" entry points of one Blackwell family (nvfp4_<fam>_*) over its Family descriptor, so the
// sm100 and sm120 ABIs cannot drift apart. FAM is the token sm100 or sm120; FAMILY an expression of type Family.
#define NVFP4_DEFINE_BLACKWELL_ABI(FAM, FAMILY)                                                                      \
  extern "C" {                                                                                                        \
  int nvfp4_##FAM##_num_configs(void) { return (FAMILY).num_configs; }                                                \
  int nvfp4_##FAM##_config_info(int index, char* name, size_t capacity) {                                             \
    NVFP4_REQUIRE(index >= 0 && index < (FAMILY).num_configs, "nvfp4_" #FAM "_config_info: index must be in [0, %d)", \
                  (FAMILY).num_configs);                                                                              \
    return nvfp4::blackwell::copy_name((FAMILY).table[index].name, name, capacity);                                   \
  }                                                                                                                   \
  int nvfp4_##FAM##_select_config(int64_t M, int64_t N, int64_t K, int invariant, int* index) {                       \
    return nvfp4::blackwell::config_index((FAMILY), M, N, K, invariant, index);                                       \
  }                                                                                                                   \
  int nvfp4_##FAM##_config_name(int64_t M, int64_t N, int64_t K, int invariant, char* buf, size_t capacity) {         \
    int index = 0;                                                                                                    \
    int rc = nvfp4::blackwell::config_index((FAMILY), M, N, K, invariant, &index);                                    \
    if (rc != NVFP4_OK) return -rc;                                                                                   \
    return nvfp4::blackwell::copy_name((FAMILY).table[index].name, buf, capacity);                                    \
  }                                                                                                                   \
  int nvfp4_##FAM##_host_check(int index, int64_t M, int64_t N, int64_t K, int out_dtype, int sm_count,               \
                               int* can_implement, size_t* workspace_bytes, int* layout_ok) {                         \
    return nvfp4::blackwell::host_check((FAMILY), index, M, N, K, out_dtype, sm_count, can_implement,                 \
                                        workspace_bytes, layout_ok);                                                  \
  }                                                                                                                   \
  int nvfp4_##FAM##_gemm_workspace_size(int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes) {              \
    return nvfp4::blackwell::workspace_size((FAMILY), M, N, K, invariant, bytes);                                     \
  }                                                                                                                   \
  int nvfp4_##FAM##_gemm(const uint8_t* act_packed, const uint8_t* act_scales, int64_t M, int64_t N, int64_t K,       \
                         const uint8_t* w_packed, const uint8_t* w_scales, const float* alpha, int alpha_per_row,     \
                         const void* bias, void* out, int out_dtype, int64_t out_row_stride, int invariant,           \
                         void* workspace, size_t workspace_bytes, void* stream) {                                     \
    return nvfp4::blackwell::gemm((FAMILY), act_packed, act_scales, M, N, K, w_packed, w_scales, alpha,               \
                                  alpha_per_row, bias, out, out_dtype, out_row_stride, invariant, workspace,          \
                                  workspace_bytes, stream);                                                           \
  }                                                                                                                   \
  }
