// ABI-level entry points that are not kernels: version, error text, compiled architectures, the chunk rule.
#include <cuda_runtime_api.h>

#include <cstdio>

#include "../kernels/chunk_rule.h"
#include "status.h"

namespace {
thread_local char g_last_error[1024] = "";
}

namespace nvfp4 {

int fail(int status, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(g_last_error, sizeof(g_last_error), fmt, args);
  va_end(args);
  return status;
}

int check_cuda(int cuda_error, const char* what) {
  if (cuda_error == cudaSuccess) return NVFP4_OK;
  return fail(NVFP4_ERR_CUDA, "%s: %s", what, cudaGetErrorString(static_cast<cudaError_t>(cuda_error)));
}

int current_device_sm() {
  int device = 0, major = 0, minor = 0;
  if (check_cuda(cudaGetDevice(&device), "cudaGetDevice") != NVFP4_OK) return -1;
  if (check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute") != NVFP4_OK)
    return -1;
  if (check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device), "cudaDeviceGetAttribute") != NVFP4_OK)
    return -1;
  return major * 10 + minor;
}

}  // namespace nvfp4

extern "C" {

int nvfp4_abi_version(void) { return NVFP4_ABI_VERSION; }

const char* nvfp4_last_error(void) { return g_last_error; }

int nvfp4_compiled_archs(int* archs, int capacity) {
  // NVFP4_COMPILED_ARCHS is defined by CMake from the architecture list, e.g. "90,100,120".
  static const int kArchs[] = {NVFP4_COMPILED_ARCHS};
  const int count = static_cast<int>(sizeof(kArchs) / sizeof(kArchs[0]));
  for (int i = 0; i < count && i < capacity; ++i) archs[i] = kArchs[i];
  return count;
}

int nvfp4_chunk_k(int64_t N, int64_t K, int64_t* chunk) {
  NVFP4_REQUIRE(chunk != nullptr, "nvfp4_chunk_k: chunk_k must not be NULL");
  NVFP4_REQUIRE(N >= 1 && K >= 16 && K % 16 == 0 && K <= INT32_MAX - 4096,
                "nvfp4_chunk_k: N must be >= 1 and K a positive multiple of 16 (got N=%lld, K=%lld)", (long long)N,
                (long long)K);
  *chunk = nvfp4::chunk_k(N, K);
  return NVFP4_OK;
}

}  // extern "C"
