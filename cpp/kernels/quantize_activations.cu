// Activation quantizer: bf16/fp16 rows -> NVFP4 (packed e2m1 + swizzled e4m3 block scales) and/or the exact
// dequantized bf16 values (e2m1 * block scale) that the Hopper GEMM consumes.
//
// The arithmetic is the "modelopt" recipe (python/nvfp4/formats/modelopt.py block_quantize; quantize_block.cuh) step
// for step, in fp32 with IEEE-rounded division and multiplication (no fast math, no contraction opportunities), so the
// bytes are identical to the Python reference. Every block is quantized against its row's decode scale alone, and
// every row is handled by CTAs that read that row alone, so the bytes of a row cannot depend on the number of rows or
// on how the launcher cuts the work: the quantizer is batch invariant whatever the launcher picks.
//
// Two kernels, one grid row per row (rows past the last real row, up to a multiple of 128, only zero the padding of
// the swizzled scale buffer, and are launched only when a scale buffer is written):
//   - resident (rows of at most kResidentMaxGroups blocks, kPrefillResidentMaxGroups above kDecodeRows rows): one
//     CTA per row holds its row in registers, G blocks per thread, all loads issued at once; the row amax is a max
//     over the raw bits reduced through shared memory, and the blocks are quantized from the registers. One read of
//     the input, one write of each output, one load latency deep at M = 1. Decode-sized calls take more threads per
//     row (fewer blocks per thread: the divisions of a block are the serial part), prefill-sized calls fewer, so
//     that several rows share an SM.
//   - streaming (longer rows): the row's CTAs each compute the amax over the whole row (a max is exact in any
//     order, so every CTA gets the same value) and quantize their chunk of blocks, re-reading it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "elementwise.cuh"
#include "quantize_activations.h"
#include "quantize_block.cuh"
#include "status.h"

namespace nvfp4 {
namespace {

constexpr int kBlock = kQuantBlock;

// Resident kernel: at most this many blocks per thread (8 registers each) and threads per row.
constexpr int kResidentMaxG = 2;
constexpr int kResidentMaxThreads = 1024;
constexpr int64_t kResidentMaxGroups = kResidentMaxG * kResidentMaxThreads;  // K <= 32768
// Threads per row the launcher aims under: decode-sized calls spread a row's divisions over many threads; larger
// calls keep a row's CTA small so that several rows share an SM.
constexpr int64_t kDecodeRows = 64;
constexpr int kDecodeThreadsPerRow = 1024;
constexpr int kPrefillThreadsPerRow = 256;
// Above kDecodeRows rows, longer rows go to the streaming kernel. Measured on the H100, the resident kernel with 4
// or 8 blocks per thread (two CTAs per SM) was slower: K = 28672, M = 8192: 1020 us resident, 532 us streaming
// (M = 1024: 133 vs 92 us); K = 14336, M = 8192: 279 vs 266 us; at K <= 8192 (1 or 2 blocks per thread) the resident
// kernel took 0.83-0.96x the streaming kernel's time.
constexpr int64_t kPrefillResidentMaxGroups = kResidentMaxG * kPrefillThreadsPerRow;

// Streaming kernel.
constexpr int kStreamThreads = 128;
constexpr int64_t kMinGroupsPerCta = 2 * kStreamThreads;  // a chunk quantizes at least this many blocks
constexpr int64_t kTargetCtas = 264;                      // about two CTAs per SM on an H100 or B200
// Only decode-sized calls (at most kDecodeRows rows) are chunked: measured on the H100, chunking 256 rows into 2
// chunks made the quantizer 1.1-2x slower (the second amax read costs more than the extra parallelism gains).

__device__ __forceinline__ int64_t swizzled_offset(int64_t row, int64_t group, int64_t groups4) {
  return ((row / 128) * groups4 + group / 4) * 512 + (row % 32) * 16 + ((row % 128) / 32) * 4 + (group % 4);
}

struct QuantArgs {
  int64_t rows, cols, x_row_stride;
  const float* static_global_scale;  // [1] or, with group_offsets, [num_groups]; null: per-token
  float* row_global_scale_out;
  const float* row_scale_multiplier;
  const int64_t* group_offsets;
  int num_groups;
  uint8_t* packed_out;
  uint8_t* scales_out;
  __nv_bfloat16* dequant_out;
  int64_t groups_per_cta;  // streaming kernel: blocks per CTA of a row (its launcher sets it)
};

// A GEMM launched as this kernel's programmatic dependent may start copying its weights now; it waits for this
// whole grid to complete before it reads what the grid writes.
__device__ __forceinline__ void allow_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Static decode scale of a row. Grouped rows: the scale of the row's group, the last e with offsets[e] <= row
// (offsets clamped to [0, rows]; a row outside every group takes group 0 or the last, and its output is not used).
__device__ __forceinline__ float static_row_scale(const QuantArgs& a, int64_t row) {
  int e = 0;
  if (a.group_offsets != nullptr) {
    int lo = 0, hi = a.num_groups - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (min(max(a.group_offsets[mid], int64_t{0}), a.rows) <= row) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    e = lo;
  }
  return a.static_global_scale[e];
}

__device__ __forceinline__ void store_row_scale(const QuantArgs& a, int64_t row, float s2) {
  a.row_global_scale_out[row] = a.row_scale_multiplier != nullptr ? row_alpha(s2, *a.row_scale_multiplier) : s2;
}

// Quantizes block g of a row against s2 and writes whichever outputs are requested.
__device__ __forceinline__ void quantize_and_store(const QuantArgs& a, int64_t row, int64_t g, int64_t groups4,
                                                   const float (&v)[kBlock], float s2) {
  __nv_fp8_storage_t scale_byte;
  float scale_value;
  uint32_t codes[kBlock];
  quantize_block16(v, s2, scale_byte, scale_value, codes);
  if (a.scales_out != nullptr) a.scales_out[swizzled_offset(row, g, groups4)] = scale_byte;
  if (a.packed_out != nullptr) {
    uint2 packed;
    packed.x = packed.y = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) packed.x |= codes[i] << (4 * i);
#pragma unroll
    for (int i = 0; i < 8; ++i) packed.y |= codes[8 + i] << (4 * i);
    reinterpret_cast<uint2*>(a.packed_out + row * (a.cols / 2))[g] = packed;
  }
  if (a.dequant_out != nullptr) {
    __align__(16) __nv_bfloat16 out[kBlock];
#pragma unroll
    for (int i = 0; i < kBlock; ++i) out[i] = dequant_bf16(codes[i], scale_value);
    uint4* dst = reinterpret_cast<uint4*>(a.dequant_out + row * a.cols + g * kBlock);
    dst[0] = reinterpret_cast<const uint4*>(out)[0];
    dst[1] = reinterpret_cast<const uint4*>(out)[1];
  }
}

// Zeroes the swizzled scale bytes of blocks [begin, end) of a row (the padding of the scale buffer).
__device__ __forceinline__ void zero_scales(const QuantArgs& a, int64_t row, int64_t begin, int64_t end,
                                            int64_t groups4) {
  if (a.scales_out != nullptr)
    for (int64_t g = begin + threadIdx.x; g < end; g += blockDim.x) a.scales_out[swizzled_offset(row, g, groups4)] = 0;
}

// Max of the magnitudes of 8 packed bf16 or fp16 values, as 16-bit patterns: with the sign cleared, the patterns of
// both formats order like their magnitudes and every NaN sorts above infinity, so the maximum pattern is torch.amax
// (NaN wins; row_decode_scale makes the NaN canonical), exact in any order.
__device__ __forceinline__ uint32_t max_magnitude_bits(uint4 raw, uint32_t m) {
  m = __vmaxu2(m, raw.x & 0x7FFF7FFFu);
  m = __vmaxu2(m, raw.y & 0x7FFF7FFFu);
  m = __vmaxu2(m, raw.z & 0x7FFF7FFFu);
  m = __vmaxu2(m, raw.w & 0x7FFF7FFFu);
  return m;
}

template <typename T, int G>
__global__ void __launch_bounds__(kResidentMaxThreads) quantize_rows_resident_kernel(const T* __restrict__ x,
                                                                                      const QuantArgs a) {
  allow_dependents();
  const int64_t row = blockIdx.x;
  const int64_t groups = a.cols / kBlock;
  const int64_t groups4 = (groups + 3) / 4;
  if (row >= a.rows) {  // padding row of the swizzled scale buffer
    zero_scales(a, row, 0, groups4 * 4, groups4);
    return;
  }
  const int nthreads = blockDim.x;
  const T* xr = x + row * a.x_row_stride;
  uint4 raw[G][2];
#pragma unroll
  for (int i = 0; i < G; ++i) {
    const int64_t g = threadIdx.x + static_cast<int64_t>(i) * nthreads;
    if (g < groups) {
      const uint4* p4 = reinterpret_cast<const uint4*>(xr + g * kBlock);
      raw[i][0] = p4[0];
      raw[i][1] = p4[1];
    } else {
      raw[i][0] = raw[i][1] = make_uint4(0u, 0u, 0u, 0u);  // magnitude 0: no effect on the amax
    }
  }
  float s2;
  if (a.static_global_scale != nullptr) {
    s2 = static_row_scale(a, row);
  } else {
    uint32_t m = 0u;
#pragma unroll
    for (int i = 0; i < G; ++i) m = max_magnitude_bits(raw[i][1], max_magnitude_bits(raw[i][0], m));
    m = max(m & 0xFFFFu, m >> 16);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, offset));
    __shared__ uint32_t warp_max[kResidentMaxThreads / 32];
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
    __syncthreads();
    m = 0u;
    for (int w = 0; w < nthreads / 32; ++w) m = max(m, warp_max[w]);
    const uint16_t bits = static_cast<uint16_t>(m);
    float amax;
    if constexpr (std::is_same<T, __half>::value) {
      amax = __half2float(__ushort_as_half(bits));
    } else {
      amax = __bfloat162float(__ushort_as_bfloat16(bits));
    }
    s2 = row_decode_scale(amax);
  }
  if (a.row_global_scale_out != nullptr && threadIdx.x == 0) store_row_scale(a, row, s2);
#pragma unroll
  for (int i = 0; i < G; ++i) {
    const int64_t g = threadIdx.x + static_cast<int64_t>(i) * nthreads;
    if (g < groups) {
      const T* e = reinterpret_cast<const T*>(raw[i]);
      float v[kBlock];
#pragma unroll
      for (int j = 0; j < kBlock; ++j) v[j] = to_float(e[j]);
      quantize_and_store(a, row, g, groups4, v, s2);
    }
  }
  zero_scales(a, row, groups, groups4 * 4, groups4);
}

template <typename T>
__global__ void __launch_bounds__(kStreamThreads) quantize_rows_streaming_kernel(const T* __restrict__ x,
                                                                                  const QuantArgs a) {
  allow_dependents();
  const int64_t row = blockIdx.x;
  const int64_t groups = a.cols / kBlock;
  const int64_t groups4 = (groups + 3) / 4;
  const int64_t chunk_begin = static_cast<int64_t>(blockIdx.y) * a.groups_per_cta;
  const int64_t chunk_end = min(chunk_begin + a.groups_per_cta, groups4 * 4);
  if (row >= a.rows) {  // padding row of the swizzled scale buffer
    zero_scales(a, row, chunk_begin, chunk_end, groups4);
    return;
  }
  const T* xr = x + row * a.x_row_stride;
  float s2;
  if (a.static_global_scale != nullptr) {
    s2 = static_row_scale(a, row);
  } else {
    // Per-token decode scale: amax(row) / 2688, or 1 when that is zero (all-zero row; any scale would do).
    float amax = 0.f;
    for (int64_t g = threadIdx.x; g < groups; g += kStreamThreads) {
      float v[kBlock];
      load_block16(xr + g * kBlock, v);
#pragma unroll
      for (int i = 0; i < kBlock; ++i) amax = nan_max(amax, fabsf(v[i]));
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) amax = nan_max(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    __shared__ float warp_amax[kStreamThreads / 32];
    if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
    __syncthreads();
    amax = warp_amax[0];
#pragma unroll
    for (int w = 1; w < kStreamThreads / 32; ++w) amax = nan_max(amax, warp_amax[w]);
    s2 = row_decode_scale(amax);
  }
  if (a.row_global_scale_out != nullptr && threadIdx.x == 0 && blockIdx.y == 0) store_row_scale(a, row, s2);
  for (int64_t g = chunk_begin + threadIdx.x; g < min(chunk_end, groups); g += kStreamThreads) {
    float v[kBlock];
    load_block16(xr + g * kBlock, v);
    quantize_and_store(a, row, g, groups4, v, s2);
  }
  zero_scales(a, row, max(chunk_begin, groups), chunk_end, groups4);
}

template <typename T, int G>
void launch_resident(const void* x, const QuantArgs& a, unsigned grid_rows, int threads, cudaStream_t s) {
  quantize_rows_resident_kernel<T, G><<<grid_rows, threads, 0, s>>>(static_cast<const T*>(x), a);
}

template <typename T>
void launch(const void* x, const QuantArgs& a, unsigned grid_rows, cudaStream_t s) {
  const int64_t groups = a.cols / kBlock;
  const bool decode = a.rows <= kDecodeRows;
  if (groups <= (decode ? kResidentMaxGroups : kPrefillResidentMaxGroups)) {
    // One block per thread where the call's aim allows it, else two.
    const int aim = decode ? kDecodeThreadsPerRow : kPrefillThreadsPerRow;
    const int g = groups <= aim ? 1 : 2;
    const int threads = static_cast<int>(((groups + g - 1) / g + 31) / 32 * 32);
    if (g == 1) return launch_resident<T, 1>(x, a, grid_rows, threads, s);
    return launch_resident<T, 2>(x, a, grid_rows, threads, s);
  }
  // Column chunks of at least kMinGroupsPerCta blocks, about kTargetCtas CTAs in all for decode-sized calls.
  const int64_t padded_groups = (groups + 3) / 4 * 4;
  const int64_t max_chunks = (padded_groups + kMinGroupsPerCta - 1) / kMinGroupsPerCta;
  int64_t chunks = decode ? (kTargetCtas + a.rows - 1) / a.rows : 1;
  chunks = chunks < 1 ? 1 : (chunks > max_chunks ? max_chunks : chunks);
  QuantArgs chunked = a;
  chunked.groups_per_cta = (padded_groups + chunks - 1) / chunks;
  const int64_t ctas_per_row = (padded_groups + chunked.groups_per_cta - 1) / chunked.groups_per_cta;
  const dim3 grid(grid_rows, static_cast<unsigned>(ctas_per_row));
  quantize_rows_streaming_kernel<T><<<grid, kStreamThreads, 0, s>>>(static_cast<const T*>(x), chunked);
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

  QuantArgs a;
  a.rows = rows;
  a.cols = cols;
  a.x_row_stride = x_row_stride;
  a.static_global_scale = static_global_scale;
  a.row_global_scale_out = row_global_scale_out;
  a.row_scale_multiplier = row_scale_multiplier;
  a.group_offsets = group_offsets;
  a.num_groups = num_groups;
  a.packed_out = packed_out;
  a.scales_out = scales_out;
  a.dequant_out = static_cast<__nv_bfloat16*>(dequant_out);
  a.groups_per_cta = 0;  // set by the launcher for the streaming kernel
  // Rows up to the next multiple of 128 exist only in the swizzled scale buffer.
  const unsigned grid_rows = static_cast<unsigned>(scales_out != nullptr ? (rows + 127) / 128 * 128 : rows);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (x_dtype == NVFP4_DTYPE_BF16) {
    launch<__nv_bfloat16>(x, a, grid_rows, s);
  } else {
    launch<__half>(x, a, grid_rows, s);
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
