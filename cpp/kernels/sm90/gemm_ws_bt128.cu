// NVFP4 GEMM kernel config: warp-specialised TMA kernel (ws_kernel.cuh), 128 weight rows x 128 tokens per CTA,
// 5-stage mbarrier pipeline. Compile with -gencode arch=compute_90a,code=sm_90a only.
#include <cuda.h>
#include <cuda_runtime.h>

#include "nvfp4/nvfp4.h"
#include "status.h"
#include "ws_kernel.cuh"

namespace nvfp4 {
namespace sm90 {
namespace {

constexpr int kBT = 128;
// 5 stages x 41 KB = 205 KB of shared memory (one CTA per SM): deep enough to cover TMA latency at one CTA/SM.
#ifdef NVFP4_WS_STAGES
constexpr int kStages = NVFP4_WS_STAGES;  // dev override
#else
constexpr int kStages = 5;
#endif

typedef CUresult (*EncodeTiledFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                  const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                  CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

int get_encoder(EncodeTiledFn* fn) {
  static EncodeTiledFn cached = nullptr;
  if (cached == nullptr) {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult q;
    int rc = check_cuda(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &q),
                        "cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled)");
    if (rc != NVFP4_OK) return rc;
    if (q != cudaDriverEntryPointSuccess || ptr == nullptr)
      return fail(NVFP4_ERR_CUDA, "cuTensorMapEncodeTiled not available from the driver");
    cached = reinterpret_cast<EncodeTiledFn>(ptr);
  }
  *fn = cached;
  return NVFP4_OK;
}

int encode(EncodeTiledFn fn, CUtensorMap* tm, CUtensorMapDataType dt, int rank, const void* base, const cuuint64_t* dims,
           const cuuint64_t* strides, const cuuint32_t* box, CUtensorMapSwizzle swz, const char* what) {
  cuuint32_t es[4] = {1, 1, 1, 1};
  CUresult r = fn(tm, dt, rank, const_cast<void*>(base), dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, swz,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return fail(NVFP4_ERR_CUDA, "cuTensorMapEncodeTiled(%s) failed: %d", what, static_cast<int>(r));
  return NVFP4_OK;
}

template <typename OutT>
int launch_typed(const GemmParams& p, const CUtensorMap& ta, const CUtensorMap& tw, const CUtensorMap& ts,
                 cudaStream_t stream) {
  using L = WsLayout<kBT, kStages>;
  auto kernel = nvfp4_sm90_ws_kernel<kBT, kStages, OutT>;
  int rc = check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotal),
                      "cudaFuncSetAttribute(nvfp4_sm90_ws_kernel)");
  if (rc != NVFP4_OK) return rc;
  const int64_t tiles = static_cast<int64_t>((p.M + kBT - 1) / kBT) * ((p.N + 127) / 128);
  if (tiles > INT32_MAX) return fail(NVFP4_ERR_INVALID_ARGUMENT, "nvfp4_sm90_gemm: too many tiles");
  kernel<<<static_cast<unsigned>(tiles), kWsThreads, L::kTotal, stream>>>(p, ta, tw, ts);
  return check_cuda(cudaGetLastError(), "nvfp4_sm90_ws_kernel launch");
}

}  // namespace

int launch_ws_bt128(const GemmParams& p, int out_dtype, cudaStream_t stream) {
  EncodeTiledFn fn;
  int rc = get_encoder(&fn);
  if (rc != NVFP4_OK) return rc;
  CUtensorMap ta, tw, ts;
  {  // activations [M][act_stride] bf16: box 64 k x BT tokens, 128B swizzle (the wgmma B layout)
    cuuint64_t dims[2] = {static_cast<cuuint64_t>(p.K), static_cast<cuuint64_t>(p.M)};
    cuuint64_t strides[1] = {static_cast<cuuint64_t>(p.act_stride) * 2};
    cuuint32_t box[2] = {64, kBT};
    rc = encode(fn, &ta, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, p.act, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B,
                "activations");
    if (rc != NVFP4_OK) return rc;
  }
  {  // weights [N][K/2] bytes: box 64 bytes (128 k) x 128 rows, 64B swizzle (conflict-free 16-byte row reads)
    cuuint64_t dims[2] = {static_cast<cuuint64_t>(p.K / 2), static_cast<cuuint64_t>(p.N)};
    cuuint64_t strides[1] = {static_cast<cuuint64_t>(p.K / 2)};
    cuuint32_t box[2] = {64, 128};
    rc = encode(fn, &tw, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, p.w, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_64B,
                "weights");
    if (rc != NVFP4_OK) return rc;
  }
  {  // scales: atoms of 512 bytes viewed as [n tile][G4][2][256]; box = 2 atoms; atoms past G4 are zero-filled
    const int64_t nt = (p.N + 127) / 128;
    cuuint64_t dims[4] = {256, 2, static_cast<cuuint64_t>(p.G4), static_cast<cuuint64_t>(nt)};
    cuuint64_t strides[3] = {256, 512, static_cast<cuuint64_t>(p.G4) * 512};
    cuuint32_t box[4] = {256, 2, 2, 1};
    rc = encode(fn, &ts, CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, p.scales, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE,
                "scales");
    if (rc != NVFP4_OK) return rc;
  }
  if (out_dtype == NVFP4_DTYPE_BF16) return launch_typed<__nv_bfloat16>(p, ta, tw, ts, stream);
  return launch_typed<__half>(p, ta, tw, ts, stream);
}

}  // namespace sm90
}  // namespace nvfp4
