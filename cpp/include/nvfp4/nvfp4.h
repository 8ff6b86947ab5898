// nvfp4 C ABI: the only interface between the compiled library and Python (ctypes) or C++ callers.
//
// Conventions shared by every entry point:
// * Pointers are device pointers unless stated; sizes are element counts; row strides are in elements.
// * `stream` is a cudaStream_t passed as void* so this header needs no CUDA include.
// * Every function returns an nvfp4_status. On failure nvfp4_last_error() returns a thread-local message that
//   names the argument and the rule it broke. No function synchronises the stream or allocates device memory:
//   outputs and workspaces are owned by the caller (torch's caching allocator in the Python package).
// * Packed NVFP4: two e2m1 codes per byte, element 2j in the low nibble. Block scales are e4m3 bytes, one per 16
//   consecutive K elements of a row, stored in the 128x4 swizzled layout (docs/format.md):
//     offset(r, g) = ((r/128)*G4 + g/4)*512 + (r%32)*16 + ((r%128)/32)*4 + (g%4),  G4 = ceil(K/64),
//   with rows padded to a multiple of 128 and groups to a multiple of 4; padding bytes are zero.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define NVFP4_API __declspec(dllexport)
#else
#define NVFP4_API __attribute__((visibility("default")))
#endif

#define NVFP4_ABI_VERSION 1

typedef enum {
  NVFP4_OK = 0,
  NVFP4_ERR_INVALID_ARGUMENT = 1,
  NVFP4_ERR_UNSUPPORTED = 2,  // no kernel compiled for this device / configuration
  NVFP4_ERR_CUDA = 3,         // a CUDA runtime call failed; the message carries cudaGetErrorString
} nvfp4_status;

typedef enum {
  NVFP4_DTYPE_BF16 = 0,
  NVFP4_DTYPE_FP16 = 1,
} nvfp4_dtype;

NVFP4_API int nvfp4_abi_version(void);
NVFP4_API const char* nvfp4_last_error(void);

// Writes up to `capacity` SM numbers (e.g. 90, 100, 120) for which the library holds device code; returns how
// many the library holds (may exceed capacity).
NVFP4_API int nvfp4_compiled_archs(int* archs, int capacity);

// Activation quantizer (NVFP4 "modelopt" recipe applied per row; docs/format.md gives the exact op order).
//   x:            [rows, cols] bf16 or fp16, row stride `x_row_stride` (>= cols), 16-byte aligned rows.
//   cols:         multiple of 16.
//   static_global_scale: device fp32 scalar, decode convention (amax / 2688); NULL selects per-token scales.
//   row_global_scale_out: device fp32 [rows]; receives each row's decode global scale (the static value copied,
//                 or the per-token one). May be NULL only with a static scale.
//   packed_out:   [rows, cols/2] uint8 or NULL.
//   scales_out:   swizzled e4m3 bytes, round_up(rows,128) * round_up(cols/16,4) bytes, or NULL; the padding is
//                 written with zeros.
//   dequant_out:  [rows, cols] bf16, exact e2m1*block_scale (no global scale) or NULL.
// Each row is processed by the same threads in the same order whatever `rows` is (batch invariant).
NVFP4_API int nvfp4_quantize_activations(const void* x, int x_dtype, int64_t rows, int64_t cols,
                                         int64_t x_row_stride, const float* static_global_scale,
                                         float* row_global_scale_out, uint8_t* packed_out, uint8_t* scales_out,
                                         void* dequant_out, void* stream);

// Hopper (sm_90a) NVFP4-weight GEMM:  out[m, n] = alpha[m] * sum_k act[m, k] * (w[n, k] * w_scale[n, k/16]) + bias[n]
//   act:        [M, K] bf16, row stride act_row_stride; exact dequantized NVFP4 activations (W4A4) or raw bf16
//               activations (W4A16).
//   w_packed:   [N, K/2] uint8 row-major; w_scales: swizzled e4m3 for N rows and K/16 groups.
//   alpha:      device fp32; one value when alpha_per_row == 0, else M values.
//   bias:       [N] in out_dtype, or NULL.
//   out:        [M, N] out_dtype, row stride out_row_stride.
//   invariant:  1 = the K reduction order of every output element is a function of (N, K) only.
//   workspace:  at least nvfp4_sm90_gemm_workspace_size(M, N, K, invariant) bytes (may be NULL when that is 0).
NVFP4_API int nvfp4_sm90_gemm_workspace_size(int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes);
NVFP4_API int nvfp4_sm90_gemm(const void* act, int64_t act_row_stride, int64_t M, int64_t N, int64_t K,
                              const uint8_t* w_packed, const uint8_t* w_scales, const float* alpha,
                              int alpha_per_row, const void* bias, void* out, int out_dtype,
                              int64_t out_row_stride, int invariant, void* workspace, size_t workspace_bytes,
                              void* stream);

#ifdef __cplusplus
}
#endif
