// Conversions shared by the elementwise kernels (activation quantizer, invariant RMSNorm): bf16/fp16 <-> fp32 and
// the canonical NaN encodings.
//
// NaNs are written in one canonical form, the one torch's CPU code produces for a positive NaN, so that NaN outputs
// are bit-identical to the torch references; CUDA's own arithmetic and conversions produce other NaN encodings.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace nvfp4 {

constexpr int kCanonicalNanF32 = 0x7FC00000;
constexpr unsigned short kCanonicalNanBf16 = 0x7FC0;
constexpr unsigned short kCanonicalNanFp16 = 0x7E00;

__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// Round to nearest even into T; a NaN becomes T's canonical NaN.
template <typename T>
__device__ __forceinline__ T from_float_rn(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 from_float_rn<__nv_bfloat16>(float v) {
  return isnan(v) ? __ushort_as_bfloat16(kCanonicalNanBf16) : __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float_rn<__half>(float v) {
  return isnan(v) ? __ushort_as_half(kCanonicalNanFp16) : __float2half_rn(v);
}

}  // namespace nvfp4
