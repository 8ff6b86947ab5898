// The activation recipe (python/nvfp4/formats/modelopt.py block_quantize, applied per row) as device functions,
// shared by the standalone quantizer (quantize_activations.cu) and the Hopper GEMM's fused quantizer, so that both
// write the same bytes: fp32 arithmetic in the recipe's order, IEEE-rounded division and multiplication (no fast
// math, no contraction), torch.amax/torch.clamp NaN semantics.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "elementwise.cuh"

namespace nvfp4 {

constexpr int kQuantBlock = 16;

// max that lets NaN win and keeps it: torch.amax semantics. Exact in any order, so any reduction tree gives the
// same value (a NaN's payload is made canonical where it is used).
__device__ __forceinline__ float nan_max(float a, float b) { return (isnan(b) || b > a) ? b : a; }

// e2m1 round-to-nearest-even with saturation; ties at 0.25/1.25/2.5/5 go down, at 0.75/1.75/3.5 go up (even code).
__device__ __forceinline__ uint32_t e2m1_code(float q) {
  if (isnan(q)) return 0u;
  const float m = fabsf(q);
  uint32_t code = (m > 0.25f) + (m >= 0.75f) + (m > 1.25f) + (m >= 1.75f) + (m > 2.5f) + (m >= 3.5f) + (m > 5.0f);
  return code | (signbit(q) ? 8u : 0u);
}

// Value of an e2m1 code as fp32, without a table: the 3 magnitude bits placed at fp32 bits 24..22 are the value
// times 2^-126 (the code for 0.5 becomes a subnormal), and the power-of-two product is exact.
__device__ __forceinline__ float e2m1_value(uint32_t code) {
  const float magnitude = __fmul_rn(__uint_as_float((code & 7u) << 22), 0x1p126f);
  return (code & 8u) ? -magnitude : magnitude;
}

// Per-token decode global scale of a row from its amax: amax / 2688, 1 for an all-zero row, canonical NaN.
__device__ __forceinline__ float row_decode_scale(float amax) {
  float s2 = __fdiv_rn(amax, 2688.0f);
  if (s2 == 0.f) s2 = 1.f;
  return isnan(s2) ? __int_as_float(kCanonicalNanF32) : s2;
}

// The GEMM's per-row alpha: decode scale times the weight's global scale, canonical NaN.
__device__ __forceinline__ float row_alpha(float s2, float multiplier) {
  const float out = __fmul_rn(s2, multiplier);
  return isnan(out) ? __int_as_float(kCanonicalNanF32) : out;
}

template <typename T>
__device__ __forceinline__ void load_block16(const T* p, float (&v)[kQuantBlock]) {
  const uint4* p4 = reinterpret_cast<const uint4*>(p);
  uint4 raw[2] = {p4[0], p4[1]};
  const T* e = reinterpret_cast<const T*>(raw);
#pragma unroll
  for (int i = 0; i < kQuantBlock; ++i) v[i] = to_float(e[i]);
}

// One 16-element block against the row's decode scale s2: the e4m3 block-scale byte, its exact value, and the 16
// e2m1 codes.
__device__ __forceinline__ void quantize_block16(const float (&v)[kQuantBlock], float s2, __nv_fp8_storage_t& scale_byte,
                                                 float& scale_value, uint32_t (&codes)[kQuantBlock]) {
  float block_amax = 0.f;
#pragma unroll
  for (int i = 0; i < kQuantBlock; ++i) block_amax = nan_max(block_amax, fabsf(v[i]));
  const float six_s2 = __fmul_rn(6.0f, s2);
  float scale = __fdiv_rn(block_amax, six_s2);
  if (scale == 0.f) scale = 1.f;
  // Clamp to [2^-9, 448] letting NaN through (torch.clamp semantics); fminf/fmaxf would swallow NaN.
  if (scale < 0.001953125f) scale = 0.001953125f;
  if (scale > 448.f) scale = 448.f;
  scale_byte = __nv_cvt_float_to_fp8(scale, __NV_SATFINITE, __NV_E4M3);
  scale_value = __half2float(__half(__nv_cvt_fp8_to_halfraw(scale_byte, __NV_E4M3)));  // exact
  const float divisor = __fmul_rn(scale_value, s2);
#pragma unroll
  for (int i = 0; i < kQuantBlock; ++i) codes[i] = e2m1_code(__fdiv_rn(v[i], divisor));
}

// The exact dequantized value e2m1 * block scale as bf16 (at most 6 significant bits: the product and the conversion
// are exact), canonical NaN.
__device__ __forceinline__ __nv_bfloat16 dequant_bf16(uint32_t code, float scale_value) {
  return from_float_rn<__nv_bfloat16>(e2m1_value(code) * scale_value);
}

}  // namespace nvfp4
