// Activation quantizer: bf16/fp16 rows -> NVFP4 (packed e2m1 + swizzled e4m3 block scales) and/or the exact
// dequantized bf16 values (e2m1 * block scale) that the Hopper GEMM consumes.
//
// The arithmetic is the "modelopt" recipe (python/nvfp4/formats/modelopt.py block_quantize; quantize_block.cuh) step for step, in
// fp32 with IEEE-rounded division and multiplication (no fast math, no contraction opportunities), so the bytes are
// identical to the Python reference. Grid = (rows rounded up to 128) x (column chunks): CTAs past the last row zero
// the padding of the swizzled scale buffer. Each CTA of a row computes the row's amax over the whole row itself (a
// max is exact in any order, so every CTA gets the same value) and quantizes only its chunk of 16-element groups;
// groups are quantized independently of each other. So the bytes of a row cannot depend on how the row is chunked,
// nor on the number of rows: the quantizer is batch invariant whatever the launcher picks. The launcher chunks only
// for decode-sized calls (rows <= kMaxChunkedRows), because every chunk re-reads its row for the amax: at M = 1 one
// CTA per row took 33 us for K = 28672 and 7 chunks take 9.4 us; at M = 256 chunking doubled the time.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "elementwise.cuh"
#include "quantize_activations.h"
#include "quantize_block.cuh"
#include "status.h"

namespace nvfp4 {
namespace {

constexpr int kThreads = 128;
constexpr int kBlock = kQuantBlock;
constexpr int64_t kMinGroupsPerCta = 2 * kThreads;  // a chunk quantizes at least this many 16-element groups
constexpr int64_t kTargetCtas = 264;                 // about two CTAs per SM on an H100 or B200
// Above this many rows every row is one CTA: measured on the H100, chunking 256 rows into 2 chunks made the
// quantizer 1.1-2x slower (the second amax read costs more than the extra parallelism gains).
constexpr int64_t kMaxChunkedRows = 64;

__device__ __forceinline__ int64_t swizzled_offset(int64_t row, int64_t group, int64_t groups4) {
  return ((row / 128) * groups4 + group / 4) * 512 + (row % 32) * 16 + ((row % 128) / 32) * 4 + (group % 4);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(
    const T* __restrict__ x, int64_t rows, int64_t cols, int64_t x_row_stride,
    const float* __restrict__ static_global_scale, float* __restrict__ row_global_scale_out,
    const float* __restrict__ row_scale_multiplier, const int64_t* __restrict__ group_offsets, int num_groups,
    uint8_t* __restrict__ packed_out, uint8_t* __restrict__ scales_out, __nv_bfloat16* __restrict__ dequant_out,
    int64_t groups_per_cta) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // A GEMM launched as this kernel's programmatic dependent may start copying its weights now; it waits for this
  // whole grid to complete before it reads what the grid writes.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  const int64_t row = blockIdx.x;
  const int64_t groups = cols / kBlock;
  const int64_t groups4 = (groups + 3) / 4;
  const int64_t chunk_begin = static_cast<int64_t>(blockIdx.y) * groups_per_cta;
  const int64_t chunk_end = chunk_begin + groups_per_cta < groups4 * 4 ? chunk_begin + groups_per_cta : groups4 * 4;

  if (row >= rows) {  // padding row of the swizzled scale buffer
    if (scales_out != nullptr)
      for (int64_t g = chunk_begin + threadIdx.x; g < chunk_end; g += kThreads)
        scales_out[swizzled_offset(row, g, groups4)] = 0;
    return;
  }
  const T* xr = x + row * x_row_stride;

  float s2;
  if (static_global_scale != nullptr) {
    // Grouped rows: the static scale of the row's group, the last e with offsets[e] <= row (offsets clamped to
    // [0, rows]; a row outside every group takes group 0 or the last, and its output is not used).
    int e = 0;
    if (group_offsets != nullptr) {
      int lo = 0, hi = num_groups - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (min(max(group_offsets[mid], int64_t{0}), rows) <= row) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      e = lo;
    }
    s2 = static_global_scale[e];
  } else {
    // Per-token decode scale: amax(row) / 2688, or 1 when that is zero (all-zero row; any scale would do).
    float amax = 0.f;
    for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
      float v[kBlock];
      load_block16(xr + g * kBlock, v);
#pragma unroll
      for (int i = 0; i < kBlock; ++i) amax = nan_max(amax, fabsf(v[i]));
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) amax = nan_max(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    __shared__ float warp_amax[kThreads / 32];
    if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
    __syncthreads();
    amax = warp_amax[0];
#pragma unroll
    for (int w = 1; w < kThreads / 32; ++w) amax = nan_max(amax, warp_amax[w]);
    s2 = row_decode_scale(amax);
  }
  if (row_global_scale_out != nullptr && threadIdx.x == 0 && blockIdx.y == 0) {
    row_global_scale_out[row] = row_scale_multiplier != nullptr ? row_alpha(s2, *row_scale_multiplier) : s2;
  }

  for (int64_t g = chunk_begin + threadIdx.x; g < chunk_end; g += kThreads) {
    if (g >= groups) {  // padding groups of a real row
      if (scales_out != nullptr) scales_out[swizzled_offset(row, g, groups4)] = 0;
      continue;
    }
    float v[kBlock];
    load_block16(xr + g * kBlock, v);
    __nv_fp8_storage_t scale_byte;
    float scale_value;
    uint32_t codes[kBlock];
    quantize_block16(v, s2, scale_byte, scale_value, codes);

    if (scales_out != nullptr) scales_out[swizzled_offset(row, g, groups4)] = scale_byte;
    if (packed_out != nullptr) {
      uint2 packed;
      packed.x = packed.y = 0;
#pragma unroll
      for (int i = 0; i < 8; ++i) packed.x |= codes[i] << (4 * i);
#pragma unroll
      for (int i = 0; i < 8; ++i) packed.y |= codes[8 + i] << (4 * i);
      reinterpret_cast<uint2*>(packed_out + row * (cols / 2))[g] = packed;
    }
    if (dequant_out != nullptr) {
      __align__(16) __nv_bfloat16 out[kBlock];
#pragma unroll
      for (int i = 0; i < kBlock; ++i) out[i] = dequant_bf16(codes[i], scale_value);
      uint4* dst = reinterpret_cast<uint4*>(dequant_out + row * cols + g * kBlock);
      dst[0] = reinterpret_cast<const uint4*>(out)[0];
      dst[1] = reinterpret_cast<const uint4*>(out)[1];
    }
  }
}

}  // namespace

int quantize_rows(const void* x, int x_dtype, int64_t rows, int64_t cols, int64_t x_row_stride,
                  const float* static_global_scale, float* row_global_scale_out, const float* row_scale_multiplier,
                  const int64_t* group_offsets, int num_groups, uint8_t* packed_out, uint8_t* scales_out,
                  void* dequant_out, void* stream) {
  NVFP4_REQUIRE(group_offsets == nullptr || num_groups >= 1, "num_groups: must be >= 1, got %d", num_groups);
  NVFP4_REQUIRE(x != nullptr, "x: must not be NULL");
  NVFP4_REQUIRE(x_dtype == NVFP4_DTYPE_BF16 || x_dtype == NVFP4_DTYPE_FP16,
                "x_dtype: must be NVFP4_DTYPE_BF16 (0) or NVFP4_DTYPE_FP16 (1), got %d", x_dtype);
  NVFP4_REQUIRE(rows >= 1, "rows: must be >= 1, got %lld", (long long)rows);
  NVFP4_REQUIRE(rows <= 0x7fffffffLL - 127, "rows: must be < 2^31 - 127, got %lld", (long long)rows);
  NVFP4_REQUIRE(cols >= 16 && cols % 16 == 0, "cols: must be a positive multiple of 16, got %lld", (long long)cols);
  NVFP4_REQUIRE(x_row_stride >= cols, "x_row_stride: must be >= cols (%lld), got %lld", (long long)cols,
                (long long)x_row_stride);
  NVFP4_REQUIRE(x_row_stride % 8 == 0, "x_row_stride: must be a multiple of 8 elements (16-byte rows), got %lld",
                (long long)x_row_stride);
  NVFP4_REQUIRE(aligned_to(x, 16), "x: must be 16-byte aligned");
  NVFP4_REQUIRE(static_global_scale != nullptr || row_global_scale_out != nullptr,
                "row_global_scale_out: must not be NULL when static_global_scale is NULL (per-token scales)");
  NVFP4_REQUIRE(packed_out == nullptr || aligned_to(packed_out, 8), "packed_out: must be 8-byte aligned");
  NVFP4_REQUIRE(dequant_out == nullptr || aligned_to(dequant_out, 16), "dequant_out: must be 16-byte aligned");
  NVFP4_REQUIRE(packed_out != nullptr || scales_out != nullptr || dequant_out != nullptr ||
                    row_global_scale_out != nullptr,
                "packed_out, scales_out, dequant_out, row_global_scale_out: at least one output is required");

  const int64_t padded_groups = (cols / 16 + 3) / 4 * 4;
  const int64_t max_chunks = (padded_groups + kMinGroupsPerCta - 1) / kMinGroupsPerCta;
  int64_t chunks = rows <= kMaxChunkedRows ? (kTargetCtas + rows - 1) / rows : 1;
  chunks = chunks < 1 ? 1 : (chunks > max_chunks ? max_chunks : chunks);
  const int64_t groups_per_cta = (padded_groups + chunks - 1) / chunks;
  const dim3 grid(static_cast<unsigned>((rows + 127) / 128 * 128), static_cast<unsigned>(chunks));
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  auto* dq = static_cast<__nv_bfloat16*>(dequant_out);
  if (x_dtype == NVFP4_DTYPE_BF16) {
    quantize_rows_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>(
        static_cast<const __nv_bfloat16*>(x), rows, cols, x_row_stride, static_global_scale, row_global_scale_out,
        row_scale_multiplier, group_offsets, num_groups, packed_out, scales_out, dq, groups_per_cta);
  } else {
    quantize_rows_kernel<__half><<<grid, kThreads, 0, s>>>(static_cast<const __half*>(x), rows, cols, x_row_stride,
                                                           static_global_scale, row_global_scale_out,
                                                           row_scale_multiplier, group_offsets, num_groups,
                                                           packed_out, scales_out, dq, groups_per_cta);
  }
  return check_cuda(cudaGetLastError(), "nvfp4_quantize_activations launch");
}

}  // namespace nvfp4

extern "C" int nvfp4_quantize_activations(const void* x, int x_dtype, int64_t rows, int64_t cols,
                                          int64_t x_row_stride, const float* static_global_scale,
                                          float* row_global_scale_out, const float* row_scale_multiplier,
                                          uint8_t* packed_out, uint8_t* scales_out, void* dequant_out,
                                          void* stream) {
  return nvfp4::quantize_rows(x, x_dtype, rows, cols, x_row_stride, static_global_scale, row_global_scale_out,
                              row_scale_multiplier, nullptr, 0, packed_out, scales_out, dequant_out, stream);
}
