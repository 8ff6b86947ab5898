// Batch-invariant RMSNorm (HF Llama formula): out = w * round(x * 1/sqrt(mean(x^2) + eps)), in the fixed order of
// python/nvfp4/invariant_norm.py (its module docstring is the specification; nvfp4.h repeats it).
//
// One CTA owns one row with a thread count that depends on the row length only, so the work a row sees never
// depends on how many rows there are. The sum of squares is the "fold halves" tree over the row zero-padded to a
// power of two P: while L > 1, s[i] = s[i] + s[i + L/2] for i < L/2. Thread t of T holds the elements t + T*j
// (j < J = P/T); the levels with L > T pair elements of the same thread (same t, j and j + J_L/2), so each thread
// first folds its own J values in fold-halves order, then the T per-thread values go through the same fold in
// shared memory (offsets >= 32) and warp shuffles (shfl_down 16, 8, 4, 2, 1). Every operation is an explicit
// IEEE-rounded intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn): nvcc can neither contract a multiply-add
// into an FMA nor use an approximate division or square root, so the bits equal the torch reference on any device.
//
// Zero padding beyond P (T*J > P for rows of at most 16 elements) does not change the result: the squares are
// never -0, and x + (+0) == x for every other x, NaN included.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "elementwise.cuh"
#include "status.h"

namespace nvfp4 {
namespace {

constexpr int64_t kMaxCols = 65536;

__host__ __device__ constexpr int log2_exact(int n) { return n <= 1 ? 0 : 1 + log2_exact(n / 2); }

__host__ __device__ constexpr int bit_reverse(int v, int bits) {
  int r = 0;
  for (int b = 0; b < bits; ++b) r |= ((v >> b) & 1) << (bits - 1 - b);
  return r;
}

__host__ __device__ constexpr int trailing_ones(int v) {
  int n = 0;
  for (; v & 1; v >>= 1) ++n;
  return n;
}

template <typename T, int kThreads, int kPerThread>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(const T* __restrict__ x, int cols, int64_t x_row_stride,
                                                            const T* __restrict__ weight, float eps,
                                                            T* __restrict__ out) {
  static_assert(kThreads >= 32 && (kThreads & (kThreads - 1)) == 0, "kThreads: power of two >= 32");
  static_assert(kPerThread >= 1 && (kPerThread & (kPerThread - 1)) == 0, "kPerThread: power of two");
  constexpr int kLog = log2_exact(kPerThread);

  const T* xr = x + static_cast<int64_t>(blockIdx.x) * x_row_stride;
  T* outr = out + static_cast<int64_t>(blockIdx.x) * cols;
  const int t = threadIdx.x;

  // 1. This thread's fold of a[j] = sq[t + kThreads*j] in fold-halves order. Fold halves over J values combines
  //    the top index bit first and the lowest last, which is the pairwise (adjacent pairs first) sum of the values
  //    taken in bit-reversed index order: stream them in that order with one partial sum per tree level, so only
  //    log2(J)+1 values are live whatever J is. stack[b] holds a finished subtree of 2^b leaves; the earlier
  //    (lower-index) subtree is always the left operand, as in s[i] + s[i + L/2].
  float stack[kLog + 1];
#pragma unroll
  for (int r = 0; r < kPerThread; ++r) {
    const int i = t + kThreads * bit_reverse(r, kLog);
    float v = 0.f;
    if (i < cols) {
      const float xf = to_float(xr[i]);
      v = __fmul_rn(xf, xf);
    }
    const int level = trailing_ones(r);  // subtrees this leaf completes
#pragma unroll
    for (int b = 0; b < level; ++b) v = __fadd_rn(stack[b], v);
    stack[level] = v;
  }
  float s = stack[kLog];

  // 2. Fold halves across the threads: s[t] = s[t] + s[t + half] for half = T/2, ..., 1.
  __shared__ float partial[kThreads];
  __shared__ float row_inv_rms;
  if (kThreads > 32) {
    partial[t] = s;
    __syncthreads();
#pragma unroll
    for (int half = kThreads / 2; half >= 32; half /= 2) {
      if (t < half) partial[t] = __fadd_rn(partial[t], partial[t + half]);
      __syncthreads();
    }
    s = partial[t & 31];  // warp 0 uses it; the others only wait at the barrier below
  }
  if (t < 32) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) s = __fadd_rn(s, __shfl_down_sync(0xffffffffu, s, offset));
    // 3. var = total / H; r = 1 / sqrt(var + eps), all IEEE-rounded (no rsqrt).
    if (t == 0) {
      const float var = __fdiv_rn(s, static_cast<float>(cols));
      row_inv_rms = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    }
  }
  __syncthreads();
  const float r = row_inv_rms;

  // 4. y = round(x * r); out = round(w * y) (the product of two bf16/fp16 values is exact in fp32).
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = t + kThreads * j;
    if (i < cols) {
      const T y = from_float_rn<T>(__fmul_rn(to_float(xr[i]), r));
      outr[i] = from_float_rn<T>(__fmul_rn(to_float(weight[i]), to_float(y)));
    }
  }
}

template <typename T, int kThreads, int kPerThread>
void launch(const void* x, int64_t rows, int cols, int64_t x_row_stride, const void* weight, float eps, void* out,
            cudaStream_t stream) {
  rms_norm_kernel<T, kThreads, kPerThread><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      static_cast<const T*>(x), cols, x_row_stride, static_cast<const T*>(weight), eps, static_cast<T*>(out));
}

// Threads T = clamp(P/8, 32, 1024) and J = max(P/T, 1) values per thread, a function of P = next_pow2(cols) only.
template <typename T>
void dispatch(const void* x, int64_t rows, int cols, int64_t x_row_stride, const void* weight, float eps, void* out,
              cudaStream_t stream) {
  int p = 1;
  while (p < cols) p *= 2;
  switch (p) {
    case 1: case 2: case 4: case 8: case 16: case 32:
      return launch<T, 32, 1>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 64: return launch<T, 32, 2>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 128: return launch<T, 32, 4>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 256: return launch<T, 32, 8>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 512: return launch<T, 64, 8>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 1024: return launch<T, 128, 8>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 2048: return launch<T, 256, 8>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 4096: return launch<T, 512, 8>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 8192: return launch<T, 1024, 8>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 16384: return launch<T, 1024, 16>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    case 32768: return launch<T, 1024, 32>(x, rows, cols, x_row_stride, weight, eps, out, stream);
    default: return launch<T, 1024, 64>(x, rows, cols, x_row_stride, weight, eps, out, stream);  // 65536
  }
}

}  // namespace
}  // namespace nvfp4

extern "C" int nvfp4_rms_norm(const void* x, int dtype, int64_t rows, int64_t cols, int64_t x_row_stride,
                              const void* weight, float eps, void* out, void* stream) {
  using namespace nvfp4;
  NVFP4_REQUIRE(dtype == NVFP4_DTYPE_BF16 || dtype == NVFP4_DTYPE_FP16,
                "dtype: must be NVFP4_DTYPE_BF16 (0) or NVFP4_DTYPE_FP16 (1), got %d", dtype);
  NVFP4_REQUIRE(rows >= 0, "rows: must be >= 0, got %lld", (long long)rows);
  NVFP4_REQUIRE(rows <= 0x7fffffffLL, "rows: must be < 2^31, got %lld", (long long)rows);
  NVFP4_REQUIRE(cols >= 1 && cols <= kMaxCols, "cols: must be in [1, %lld], got %lld", (long long)kMaxCols,
                (long long)cols);
  NVFP4_REQUIRE(x_row_stride >= cols, "x_row_stride: must be >= cols (%lld), got %lld", (long long)cols,
                (long long)x_row_stride);
  NVFP4_REQUIRE(std::isfinite(eps) && eps >= 0.f, "eps: must be finite and >= 0, got %g", (double)eps);
  if (rows == 0) return NVFP4_OK;
  NVFP4_REQUIRE(x != nullptr, "x: must not be NULL");
  NVFP4_REQUIRE(weight != nullptr, "weight: must not be NULL");
  NVFP4_REQUIRE(out != nullptr, "out: must not be NULL");
  NVFP4_REQUIRE(aligned_to(x, 2), "x: must be 2-byte aligned");
  NVFP4_REQUIRE(aligned_to(weight, 2), "weight: must be 2-byte aligned");
  NVFP4_REQUIRE(aligned_to(out, 2), "out: must be 2-byte aligned");

  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int c = static_cast<int>(cols);
  if (dtype == NVFP4_DTYPE_BF16) {
    dispatch<__nv_bfloat16>(x, rows, c, x_row_stride, weight, eps, out, s);
  } else {
    dispatch<__half>(x, rows, c, x_row_stride, weight, eps, out, s);
  }
  return check_cuda(cudaGetLastError(), "nvfp4_rms_norm launch");
}
