// The activation quantizer's launcher, shared by the exported nvfp4_quantize_activations (nvfp4.h) and the grouped
// Hopper GEMM. group_offsets (device int64 [num_groups + 1], or null): with a static scale, row r takes
// static_global_scale[e] of the group e whose rows [group_offsets[e], group_offsets[e+1]) hold it; every other
// argument as nvfp4_quantize_activations.
#pragma once
#include <cstdint>

namespace nvfp4 {

int quantize_rows(const void* x, int x_dtype, int64_t rows, int64_t cols, int64_t x_row_stride,
                  const float* static_global_scale, float* row_global_scale_out, const float* row_scale_multiplier,
                  const int64_t* group_offsets, int num_groups, uint8_t* packed_out, uint8_t* scales_out,
                  void* dequant_out, void* stream);

}  // namespace nvfp4
