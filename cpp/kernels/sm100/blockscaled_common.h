// Plain-C++ interface between the Blackwell C ABI (dispatch.cu of sm100/ and sm120/) and the per-configuration
// CUTLASS translation units. No CUTLASS include here: dispatch code that includes this header stays cheap to compile.
#pragma once
#include <cstddef>
#include <cstdint>

namespace nvfp4 {
namespace blackwell {

// One NVFP4 x NVFP4 GEMM call:  out[m, n] = alpha[m or 0] * sum_k A[m, k] * B[n, k] + bias[n]
// A = activations (M rows), B = weights (N rows); both packed e2m1 [rows, K/2] (K-major, contiguous) with their
// e4m3 block scales in the 128x4 swizzled layout (= CUTLASS Sm1xxBlockScaledConfig<16>::tile_atom_to_shape_SF*).
struct GemmArgs {
  int64_t M = 0, N = 0, K = 0;
  const uint8_t* a_packed = nullptr;
  const uint8_t* a_scales = nullptr;
  const uint8_t* b_packed = nullptr;
  const uint8_t* b_scales = nullptr;
  const float* alpha = nullptr;  // device fp32: 1 value (alpha_per_row == 0) or M values
  int alpha_per_row = 0;
  const void* bias = nullptr;    // [N] in the output dtype, or NULL (then 0)
  void* out = nullptr;           // [M, N] row-major, row stride out_row_stride (elements)
  int64_t out_row_stride = 0;
  int out_dtype = 0;             // NVFP4_DTYPE_BF16 / NVFP4_DTYPE_FP16
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  void* stream = nullptr;
  int sm_count = 0;              // > 0 always: passed explicitly so CUTLASS never queries the device
  int device_id = 0;             // the current CUDA device (the one the launch runs on); 0 for host-only checks
};

// What a configuration's host-side check reports (no device call is made).
struct HostCheck {
  int can_implement = 0;          // CUTLASS GemmUniversalAdapter::can_implement(args) == kSuccess
  size_t workspace_bytes = 0;     // GemmUniversalAdapter::get_workspace_size(args)
  int64_t sfa_cosize = 0;         // cosize of the SFA / SFB layouts handed to CUTLASS (bytes of scales read)
  int64_t sfb_cosize = 0;
  int layout_matches_python = 0;  // SFA/SFB layouts give the same offsets as the 128x4 formula of docs/format.md
};

// Every configuration TU defines these two functions (names come from the config table of each arch).
using RunFn = int (*)(const GemmArgs&);
using CheckFn = int (*)(const GemmArgs&, HostCheck*);

// Byte offset of the scale of (row, 16-wide K group g) in the 128x4 layout (docs/format.md), G4 = ceil(K/64).
inline int64_t swizzled_offset(int64_t row, int64_t g, int64_t groups) {
  const int64_t g4 = (groups + 3) / 4;
  return ((row / 128) * g4 + g / 4) * 512 + (row % 32) * 16 + ((row % 128) / 32) * 4 + (g % 4);
}

inline int64_t swizzled_bytes(int64_t rows, int64_t groups) {
  return (rows + 127) / 128 * 128 * ((groups + 3) / 4 * 4);
}

}  // namespace blackwell
}  // namespace nvfp4
