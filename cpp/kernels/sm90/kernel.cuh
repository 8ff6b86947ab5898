// Hopper (sm_90a) NVFP4-weight x bf16-activation GEMM kernel: D^T = W * X^T with RS-wgmma.
//
// CTA: 256 threads = 2 warpgroups; warpgroup wg owns weight rows [n0 + 64*wg, n0 + 64*wg + 64) of a 128-row tile
// and all BT tokens of the token tile. K is walked in BK-wide tiles through a STAGES-deep cp.async ring
// (weights 8-byte chunks, scales the 512-byte 128x4 atoms as stored, activations 16-byte chunks placed in the
// no-swizzle K-major core-matrix layout wgmma reads). Each thread dequantises its A fragment from shared memory:
//   e2m1 nibble -> bf16 bits equal to e2m1 * 2^-126 (sign, 2 exponent bits, 1 mantissa bit dropped into place;
//   the code for 0.5 becomes a bf16 subnormal), then one bf16x2 multiply by (block scale * 2^119) taken from a
//   256-entry shared table. The product e2m1 * scale * 2^-7 is exact in bf16 (<= 6 significant bits, normal
//   range); the epilogue multiplies by alpha * 2^7 (exact power of two).
// Reduction order: within a chunk of kc K-elements the k16 wgmmas accumulate in K order from zero; chunk sums are
// added in order to a zero-initialised total (config.h explains why this makes the result independent of M).
// Split modes (one CTA per (tile, chunk)) add the chunk sums in the same order, either through distributed shared
// memory inside one thread-block cluster (kSplitCluster: one kernel per call) or through fp32 partials in global
// memory and nvfp4_sm90_reduce_kernel (kSplitPartials: two kernels per call); the bits are the same.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "wgmma_rs.cuh"

namespace nvfp4 {
namespace sm90 {

// How a CTA covers K and where its chunk sums go.
enum KernelMode : int {
  kWholeK = 0,         // the CTA walks every chunk and stores the output
  kSplitPartials = 1,  // blockIdx.z is the chunk; fp32 partials to global memory, reduced by a second kernel
  kSplitCluster = 2,   // blockIdx.z is the chunk and the cluster rank; the cluster reduces through DSMEM
};
// Largest cluster the split-cluster mode launches (16 needs cudaFuncAttributeNonPortableClusterSizeAllowed).
constexpr int kMaxClusterSplits = 16;

struct GemmParams {
  const __nv_bfloat16* act;
  int64_t act_stride;  // elements
  int M, N, K;
  const uint8_t* w;       // [N, K/2]
  const uint8_t* scales;  // swizzled 128x4
  int G4;                 // ceil(K/64)
  const float* alpha;
  int alpha_per_row;
  const void* bias;  // [N] out dtype or null
  void* out;
  int64_t out_stride;  // elements
  int kc;              // chunk length in K (multiple of 256)
  float* partial;      // kSplitPartials: [splits][M][N] fp32
};

template <typename OutT>
__device__ __forceinline__ OutT to_out(float v);
template <>
__device__ __forceinline__ __nv_bfloat16 to_out<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half to_out<__half>(float v) { return __float2half_rn(v); }
template <typename OutT>
__device__ __forceinline__ float from_out(OutT v);
template <>
__device__ __forceinline__ float from_out<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float from_out<__half>(__half v) { return __half2float(v); }

// The one epilogue formula, shared by the fused and the split (reduction-kernel) paths so both give the same bits.
// `total` carries the 2^-7 factor of the dequantised weights.
__device__ __forceinline__ float epilogue_value(float total, float alpha, float bias) {
  return __fmaf_rn(total, __fmul_rn(alpha, 128.0f), bias);
}

// Stores out[m, n] from its chunk total and its already loaded alpha and bias.
template <typename OutT>
__device__ __forceinline__ void store_output(const GemmParams& p, int m, int n, float total, float alpha, float bias) {
  static_cast<OutT*>(p.out)[static_cast<int64_t>(m) * p.out_stride + n] = to_out<OutT>(epilogue_value(total, alpha, bias));
}

template <typename OutT>
__device__ __forceinline__ void store_output(const GemmParams& p, int m, int n, float total) {
  const float a = p.alpha[p.alpha_per_row ? m : 0];
  const float b = p.bias ? from_out<OutT>(static_cast<const OutT*>(p.bias)[n]) : 0.0f;
  store_output<OutT>(p, m, n, total, a, b);
}

// bf16x2 bits of (e4m3 byte value) * 2^119, both halves equal; NaN for the e4m3 NaN codes.
__device__ __forceinline__ uint32_t scale_entry(int b) {
  const int e = (b >> 3) & 15, m = b & 7;
  float v;
  if ((b & 0x7F) == 0x7F) {
    v = __int_as_float(0x7FC00000);
  } else if (e == 0) {
    v = ldexpf(static_cast<float>(m), 119 - 9);  // m/8 * 2^-6 * 2^119
  } else {
    v = ldexpf(static_cast<float>(8 + m), e - 7 - 3 + 119);
  }
  if (b & 0x80) v = -v;
  const uint32_t h = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  return h | (h << 16);
}

// One packed byte (two e2m1 codes, element 2j low) -> bf16x2 {lo = low nibble, hi = high nibble} of e2m1 * 2^-126.
__device__ __forceinline__ uint32_t e2m1x2_raw(uint32_t x) {
  const uint32_t q = x * 0x01001000u;  // low nibble at bits 12..15, high nibble at bits 28..31
  return (q & 0x80008000u) | ((q >> 6) & 0x01C001C0u);
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async8(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// Cluster barrier halves. arrive.release orders this CTA's earlier shared-memory accesses (reads included) before
// what other CTAs do after their wait.acquire; between the two a CTA may do work that needs no other CTA.
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }
// Stores an fp32 at shared address `local` of this CTA's layout into the shared memory of cluster rank `rank`.
__device__ __forceinline__ void st_cluster_f32(uint32_t local, int rank, float v) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(rank));
  asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(remote), "f"(v) : "memory");
}

// No-swizzle K-major descriptor: LBO = distance between the two 8-element K halves, SBO = between 8-row groups.
__device__ __forceinline__ uint64_t make_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((saddr >> 4) & 0x3FFF) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32);
}

template <int BT, int BK, int STAGES>
struct Layout {
  static constexpr int kA = BT * BK * 2;         // activations, core-matrix layout
  static constexpr int kWRow = BK / 2 + 16;      // weight row pitch in bytes (+16: conflict-free byte reads)
  static constexpr int kW = 128 * kWRow;         // weights
  static constexpr int kS = (BK / 64) * 512;     // scale atoms
  static constexpr int kStage = kA + kW + kS;
  static constexpr int kTable = 256 * 4;
  static constexpr int kTotal = STAGES * kStage + kTable;
  static_assert(kA % 16 == 0 && kW % 16 == 0 && kS % 16 == 0, "16-byte aligned regions");
};

template <int BT>
struct MinBlocks {
  static constexpr int value = BT <= 32 ? 2 : 1;
};

// MODE: a KernelMode.
template <int BT, int BK, int STAGES, typename OutT, int MODE>
__global__ void __launch_bounds__(256, MinBlocks<BT>::value) nvfp4_sm90_gemm_kernel(const __grid_constant__ GemmParams p) {
  using L = Layout<BT, BK, STAGES>;
  constexpr int KG = BK / 64;  // 64-wide K groups per tile (one wgmma commit group each)
  static_assert(KG % 2 == 0 || KG == 1, "A double buffer parity");
  extern __shared__ __align__(128) uint8_t smem[];
  uint32_t* table = reinterpret_cast<uint32_t*>(smem + STAGES * L::kStage);
  const int tid = threadIdx.x;
  table[tid] = scale_entry(tid);

  const int M = p.M, N = p.N, K = p.K;
  const int m0 = blockIdx.x * BT;
  const int n0 = blockIdx.y * 128;
  constexpr bool SPLIT = MODE != kWholeK;
  int kbeg = 0, kend = K;
  if (SPLIT) {
    kbeg = blockIdx.z * p.kc;
    kend = min(K, kbeg + p.kc);
  }
  const int ntiles = (kend - kbeg + BK - 1) / BK;
  const int tiles_per_chunk = p.kc / BK;
  const int64_t wrow_bytes = K / 2;
  const uint32_t smem_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem));

  auto load_tile = [&](int stage, int kt) {
    const int k0 = kbeg + kt * BK;
    const uint32_t sA = smem_base + stage * L::kStage;
    const uint32_t sW = sA + L::kA;
    const uint32_t sS = sW + L::kW;
#pragma unroll
    for (int i = tid; i < BT * (BK / 8); i += 256) {
      const int tok = i / (BK / 8), kc8 = i % (BK / 8);
      const int m = m0 + tok, k = k0 + kc8 * 8;
      const bool v = m < M && k < kend;
      const void* src = v ? static_cast<const void*>(p.act + static_cast<int64_t>(m) * p.act_stride + k) : p.act;
      cp_async16(sA + (kc8 * (BT / 8) + tok / 8) * 128 + (tok % 8) * 16, src, v);
    }
#pragma unroll
    for (int i = tid; i < 128 * (BK / 16); i += 256) {
      const int r = i / (BK / 16), c = i % (BK / 16);
      const int n = n0 + r, k = k0 + c * 16;
      const bool v = n < N && k < kend;
      const void* src = v ? static_cast<const void*>(p.w + static_cast<int64_t>(n) * wrow_bytes + k / 2) : p.w;
      cp_async8(sW + r * L::kWRow + c * 8, src, v);
    }
#pragma unroll
    for (int i = tid; i < KG * 32; i += 256) {
      const int a = i / 32, c = i % 32;
      const int g4 = k0 / 64 + a;
      const bool v = g4 < p.G4 && k0 + a * 64 < kend;
      const void* src =
          v ? static_cast<const void*>(p.scales + (static_cast<int64_t>(n0 / 128) * p.G4 + g4) * 512 + c * 16) : p.scales;
      cp_async16(sS + a * 512 + c * 16, src, v);
    }
  };

  const int wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int rA = wg * 64 + warp * 16 + g;  // this thread's rows: rA and rA + 8 (tile-local)
  const int srowA = (rA % 32) * 16 + (rA / 32) * 4;
  const int srowB = ((rA + 8) % 32) * 16 + ((rA + 8) / 32) * 4;

  float acc[BT / 2];
  float total[BT / 2];
#pragma unroll
  for (int i = 0; i < BT / 2; ++i) {
    acc[i] = 0.0f;
    total[i] = 0.0f;
  }
  uint32_t afrag[2][4][4];

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < ntiles) load_tile(s, s);
    cp_async_commit();
  }

  for (int kt = 0; kt < ntiles; ++kt) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nt = kt + STAGES - 1;
      if (nt < ntiles) load_tile(nt % STAGES, nt);
      cp_async_commit();
    }
    const int stage = kt % STAGES;
    const uint8_t* sAp = smem + stage * L::kStage;
    const uint8_t* wA = sAp + L::kA + rA * L::kWRow + t;
    const uint8_t* wB = wA + 8 * L::kWRow;
    const uint8_t* sc = sAp + L::kA + L::kW;
    const uint32_t sAaddr = smem_base + stage * L::kStage;
#pragma unroll
    for (int kg = 0; kg < KG; ++kg) {
      uint32_t(&af)[4][4] = afrag[kg & 1];
#pragma unroll
      for (int s4 = 0; s4 < 4; ++s4) {
        const int s = kg * 4 + s4;  // k16 step within the tile = scale group within the tile
        const uint32_t scA = table[sc[(s / 4) * 512 + srowA + (s % 4)]];
        const uint32_t scB = table[sc[(s / 4) * 512 + srowB + (s % 4)]];
        const uint32_t xA0 = wA[s * 8], xA1 = wA[s * 8 + 4];
        const uint32_t xB0 = wB[s * 8], xB1 = wB[s * 8 + 4];
        af[s4][0] = bf16x2_mul(e2m1x2_raw(xA0), scA);  // row g,   k 2t..2t+1
        af[s4][1] = bf16x2_mul(e2m1x2_raw(xB0), scB);  // row g+8, k 2t..2t+1
        af[s4][2] = bf16x2_mul(e2m1x2_raw(xA1), scA);  // row g,   k 2t+8..2t+9
        af[s4][3] = bf16x2_mul(e2m1x2_raw(xB1), scB);  // row g+8, k 2t+8..2t+9
      }
      wgmma_fence();
      fence_regs(acc);
#pragma unroll
      for (int s4 = 0; s4 < 4; ++s4) {
        const int s = kg * 4 + s4;
        const uint64_t desc = make_desc(sAaddr + (2 * s) * (BT / 8) * 128, (BT / 8) * 128, 128);
        WgmmaRS<BT>::mma(acc, af[s4], desc, 1);
      }
      wgmma_commit();
      fence_regs(acc);
      wgmma_wait<1>();
    }
    wgmma_wait<0>();
    fence_regs(acc);
    if ((kt + 1) % tiles_per_chunk == 0 || kt + 1 == ntiles) {
#pragma unroll
      for (int i = 0; i < BT / 2; ++i) {
        total[i] = __fadd_rn(total[i], acc[i]);
        acc[i] = 0.0f;
      }
    }
  }

  // acc/total index i = j*4 + h*2 + e holds token m0 + 8j + 2t + e, row n0 + rA + 8h.
  if constexpr (MODE == kSplitCluster) {
    // Rank r of the cluster holds chunk r's sums. Total slot i (= j*4 + h*2 + e) of every thread is finished by
    // rank i % S: each rank pushes its chunk sum for slot i into that rank's shared memory (the pipeline buffers,
    // free once every rank is past its main loop), then the owner adds the S values in rank order to zero, which is
    // the order of the partials path. Only the pushes cross CTAs, so no CTA waits for another after the second
    // barrier.
    static_assert((BT / 2 + kMaxClusterSplits - 1) * 1024 <= STAGES * L::kStage, "cluster inbox fits the stages");
    const int splits = static_cast<int>(gridDim.z), rank = static_cast<int>(blockIdx.z);
    cp_async_wait<0>();
    cluster_arrive();  // this CTA no longer reads its stage buffers
    // Epilogue operands of this thread's first owned slot, loaded while the slower ranks finish.
    const int n_lo = n0 + rA, n_hi = n_lo + 8;
    const float bias_lo = p.bias && n_lo < N ? from_out<OutT>(static_cast<const OutT*>(p.bias)[n_lo]) : 0.0f;
    const float bias_hi = p.bias && n_hi < N ? from_out<OutT>(static_cast<const OutT*>(p.bias)[n_hi]) : 0.0f;
    const int first_m = m0 + 8 * (rank / 4) + 2 * t + rank % 2;
    const float alpha0 = p.alpha[p.alpha_per_row ? min(first_m, M - 1) : 0];
    cluster_wait();
    const uint32_t inbox = smem_base;  // [owned slot][source rank][256 threads] fp32 in the owner's layout
    int owner = 0, local_slot = 0;  // of slot i: i % splits, i / splits
#pragma unroll
    for (int i = 0; i < BT / 2; ++i) {
      st_cluster_f32(inbox + static_cast<uint32_t>(((local_slot * splits + rank) * 256 + tid) * 4), owner, total[i]);
      if (++owner == splits) owner = 0, ++local_slot;
    }
    cluster_arrive();
    cluster_wait();  // every push into this CTA has landed
    const float* box = reinterpret_cast<const float*>(smem);
    for (int local_slot = 0, i = rank; i < BT / 2; ++local_slot, i += splits) {
      float sum = 0.0f;
      for (int r = 0; r < splits; ++r) sum = __fadd_rn(sum, box[(local_slot * splits + r) * 256 + tid]);
      const int j = i / 4, h = (i / 2) % 2, e = i % 2;
      const int m = m0 + 8 * j + 2 * t + e;
      const int n = h ? n_hi : n_lo;
      if (m < M && n < N) store_output<OutT>(p, m, n, sum, p.alpha_per_row ? p.alpha[m] : alpha0, h ? bias_hi : bias_lo);
    }
  } else {
#pragma unroll
    for (int j = 0; j < BT / 8; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int m = m0 + 8 * j + 2 * t + e;
          const int n = n0 + rA + 8 * h;
          if (m < M && n < N) {
            const float v = total[j * 4 + h * 2 + e];
            if (MODE == kSplitPartials) {
              p.partial[(static_cast<int64_t>(blockIdx.z) * M + m) * N + n] = v;
            } else {
              store_output<OutT>(p, m, n, v);
            }
          }
        }
      }
    }
  }
}

// Ordered reduction of the split partials: total = 0 + p0 + p1 + ... (same as the in-register chunk sum).
template <typename OutT>
__global__ void nvfp4_sm90_reduce_kernel(const __grid_constant__ GemmParams p, int splits) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t MN = static_cast<int64_t>(p.M) * p.N;
  if (idx >= MN) return;
  float total = 0.0f;
  for (int s = 0; s < splits; ++s) total = __fadd_rn(total, p.partial[s * MN + idx]);
  const int m = static_cast<int>(idx / p.N), n = static_cast<int>(idx % p.N);
  store_output<OutT>(p, m, n, total);
}

// Host side of one token tile BT, each defined in its own gemm_btN.cu (launch.cuh).
struct TileEntry {
  // Launches the GEMM kernel (the reduction kernel of kSplitPartials is launched by dispatch.cu).
  int (*launch)(const GemmParams& p, int out_dtype, int mode, int splits, cudaStream_t stream);
  // Occupancy of this tile's kernel on the current device: CTAs per SM of the plain launch, and how many
  // `splits`-CTA clusters fit at once (0: a cluster of that size cannot be scheduled).
  int (*occupancy)(int splits, int* ctas_per_sm, int* max_clusters);
};
TileEntry tile_bt8();
TileEntry tile_bt16();
TileEntry tile_bt32();
TileEntry tile_bt64();
TileEntry tile_bt128();

}  // namespace sm90
}  // namespace nvfp4
