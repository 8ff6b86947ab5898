// Hopper (sm_90a) NVFP4-weight GEMM: out^T = W * X^T with register-operand bf16 wgmma (RS form), one kernel family
// for every M (the token tile BT = wgmma N is 8, 16, 32, 64 or 128).
//
// CTA = 3 warpgroups (384 threads). Warpgroup 0 produces: one thread copies each stage's weights and scales (8 slabs
// of the runtime layout in layout.h, one bulk copy each) and, for bf16 activation operands, the activations (TMA, 128B
// swizzle, zero fill past M and K); with the fused quantizer (ActSource kActQuant) the raw bf16/fp16 activations land
// there by TMA and three of its warps quantize them in place (quantize_block.cuh, the bytes of the standalone
// quantizer) while the fourth issues the copies. Warpgroups 1 and 2 consume: each owns 64 weight rows x BT tokens,
// reads its A fragment with one 16-byte and one 8-byte shared-memory load per lane and 64-k group, dequantizes it
// with whole-word integer ops (e2m1 * 2^-126 as bf16 bits) and one bf16x2 multiply by (block scale * 2^119) from a
// 256-entry table (the product e2m1 * scale * 2^-7 is exact in bf16), and issues 4 k16 wgmmas per group with one
// commit group in flight while the next group is dequantized. Full/empty mbarriers per stage; no block-wide barrier
// in the main loop.
//
// Reduction order (config.h): K is cut into chunks of kc; each chunk's k16 wgmma chain starts from zero in K order;
// chunk sums are added in chunk order to a zero-initialised total (0 + s0 + s1 + ...). Whether a CTA walks every
// chunk (kWholeK), or the chunks of a tile are spread over `splits` CTAs that add them in a thread-block cluster
// (kSplitCluster, through distributed shared memory) or through fp32 partials and a second kernel (kSplitPartials),
// does not change a bit; neither do BT, the activation source or the number of CTAs.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../quantize_block.cuh"
#include "layout.h"
#include "wgmma_rs.cuh"

namespace nvfp4 {
namespace sm90 {

enum KernelMode : int {
  kWholeK = 0,         // the CTA walks every chunk of its tile and stores the output
  kSplitPartials = 1,  // blockIdx.z is the CTA's rank among its tile's CTAs; fp32 chunk sums to global memory
  kSplitCluster = 2,   // blockIdx.z is the rank in the tile's cluster; the cluster adds the chunk sums through DSMEM
};
enum ActSource : int {
  kActTma = 0,    // bf16 operand in global memory (W4A16 activations, or the standalone quantizer's output)
  kActQuant = 1,  // raw bf16/fp16 activations quantized per row inside the kernel (W4A4, static or per-token)
};
constexpr int kThreads = 384;
constexpr int kMaxClusterSplits = 16;  // 16 needs cudaFuncAttributeNonPortableClusterSizeAllowed
constexpr int kQuantWarps = 3;  // fused quantizer: producer warps that quantize (the fourth issues the copies)

struct GemmParams {
  int M, N, K;
  int kc;        // chunk length (multiple of 256)
  int nchunks;   // ceil(K / kc)
  int cpc;       // split modes: chunks per CTA (rank r owns chunks [r*cpc, (r+1)*cpc))
  int kg_total;  // ceil(K / 64): 64-k groups per slab in the runtime layout
  const uint8_t* w;  // runtime layout (layout.h)
  // kActTma: alpha[0] or alpha[m] (alpha_per_row). kActQuant: alpha[0] is the weight's global scale, the kernel
  // multiplies it by each row's decode scale as the standalone quantizer does.
  const float* alpha;
  int alpha_per_row;
  const void* bias;  // [N] out dtype or null
  void* out;
  int64_t out_stride;  // elements
  float* partial;      // kSplitPartials: [nchunks][M][N] chunk sums (without alpha or bias)
  const void* x;       // kActQuant: raw activations [M][x_stride]
  int64_t x_stride;    // elements
  const float* static_scale;  // kActQuant: device fp32 decode scale, or null for per-token scales
  // Grouped GEMM (kWholeK only; group_offsets non-null): rows [group_offsets[e], group_offsets[e+1]) of x and out
  // belong to group (expert) e of num_groups, whose weights start at w + e * w_group_stride bytes and whose alpha and
  // static scale are alpha[e] and static_scale[e]; with kActTma, row_scale[m] (or null for W4A16) is row m's decode
  // scale, multiplied by alpha[e] as the quantizer would (row_alpha). blockIdx.x = slot * tiles_n + weight tile: slot
  // s is the s-th token tile in expert order, each expert's rows cut into tiles of BT from its first row. Offsets are
  // clamped to [0, M] (a group whose end lies before its start has no rows), so that no value makes the kernel read
  // or write out of bounds.
  const int64_t* group_offsets;
  int num_groups;
  int64_t w_group_stride;
  const float* row_scale;
  // 1: launched as a programmatic dependent of the activation quantizer (PDL): the weights of the first ring are
  // copied before griddepcontrol.wait, the activations and the per-row alphas (the quantizer's outputs) after it.
  int after_prior;
};
constexpr int kMaxGroups = 4096;  // group tile counts live in the stage ring while the CTA finds its tile

template <int BT>
struct Tile {
  static constexpr int KG = BT <= 64 ? 4 : 2;  // 64-k groups per stage: BK = 256 for decode tiles, 128 for prefill
  static constexpr int BK = KG * kKGroup;
  // One CTA per SM: the decode tiles get a deep ring instead of a second CTA (at two CTAs per SM the 80-register
  // cap makes ptxas serialize the wgmmas), and so the same bytes in flight.
  static constexpr int STAGES = BT <= 16 ? 8 : (BT <= 64 ? 4 : 5);
  static constexpr int kActBox = BT * 128;  // one 64-k TMA box of BT token rows (128B swizzle)
  static constexpr int kAct = KG * kActBox;
  static constexpr int kSlabBytes = KG * kGroupBytes;
  static constexpr int kW = 8 * kSlabBytes;
  static constexpr int kStage = kAct + kW;
  static constexpr int kRing = STAGES * kStage;
  static constexpr int kTable = 1024;
  static constexpr int kAmax = kMaxClusterSplits * BT * 4;  // [rank][row] partial row amaxes
  static constexpr int kS2 = (BT * 4 + 15) / 16 * 16;      // [row] decode scales
  static constexpr int kBars = 3 * STAGES * 8;  // full, empty, and (fused quantizer) raw-activations-landed
  static constexpr int kGroupInfo = 16;          // grouped GEMM: this CTA's group, first row and end row
  static constexpr int kTotal = 1024 + kRing + kTable + kAmax + kS2 + kBars + kGroupInfo;  // +1024: alignment slack
  static constexpr int kMinBlocks = 1;
  // Tiles of 32 tokens and more run one CTA per SM and need more than 168 registers per consumer thread: the
  // producer warpgroup (copies only: the fused quantizer serves smaller tiles) gives its registers away.
  static constexpr bool kSetMaxNreg = BT >= 32;
  // Split modes: chunks per CTA, each chunk's sum kept in registers until the end.
  static constexpr int kMaxCpc = BT <= 32 ? 4 : (BT <= 64 ? 2 : 1);
  static_assert(kActBox % 1024 == 0 && kStage % 1024 == 0, "128B-swizzle boxes need 1024-byte alignment");
  static_assert(BT > 64 || (BT / 2 + kMaxClusterSplits) * kMaxCpc * 1024 <= kRing, "the cluster inbox fits the ring");
  static_assert(kMaxGroups * 4 <= kRing, "the group tile counts fit the ring");
};

// --- numerics shared with the reduction kernel --------------------------------------------------------------------

// Rounded once; a NaN output is the canonical NaN, so that its bits do not depend on which path produced it.
template <typename OutT>
__device__ __forceinline__ OutT to_out(float v) {
  return from_float_rn<OutT>(v);
}
template <typename OutT>
__device__ __forceinline__ float from_out(OutT v);
template <>
__device__ __forceinline__ float from_out<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float from_out<__half>(__half v) { return __half2float(v); }

// The one epilogue formula. `total` carries the 2^-7 factor of the dequantised weights.
__device__ __forceinline__ float epilogue_value(float total, float alpha, float bias) {
  return __fmaf_rn(total, __fmul_rn(alpha, 128.0f), bias);
}

template <typename OutT>
__device__ __forceinline__ void store_output(const GemmParams& p, int m, int n, float total, float alpha) {
  const float b = p.bias ? from_out<OutT>(static_cast<const OutT*>(p.bias)[n]) : 0.0f;
  static_cast<OutT*>(p.out)[static_cast<int64_t>(m) * p.out_stride + n] = to_out<OutT>(epilogue_value(total, alpha, b));
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

// --- PTX wrappers ---------------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
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
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred P1;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
      "@P1 bra DONE_%=;\nbra WAIT_%=;\nDONE_%=:\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// One contiguous global -> shared copy by the bulk copy engine, completing on `bar`.
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
__device__ __forceinline__ void tma_2d(uint32_t dst, const CUtensorMap* tm, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(tm)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint2 lds64(uint32_t addr) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr));
  return v;
}
__device__ __forceinline__ void sts128(uint32_t addr, uint4 v) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
// Cluster barrier halves. arrive.release orders this CTA's earlier shared-memory accesses before what other CTAs do
// after their wait.acquire.
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}
// Stores an fp32 at shared address `local` of this CTA's layout into the shared memory of cluster rank `rank`.
__device__ __forceinline__ void st_cluster_f32(uint32_t local, int rank, float v) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(rank));
  asm volatile("st.shared::cluster.f32 [%0], %1;\n" ::"r"(remote), "f"(v) : "memory");
}
// PDL: waits until the grids this one depends on programmatically have completed and their writes are visible
// (returns at once in a grid launched without that dependency).
__device__ __forceinline__ void grid_dependency_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
// Barrier of the producer warpgroup alone (id 1; id 0 is __syncthreads).
__device__ __forceinline__ void producer_sync() { asm volatile("bar.sync 1, 128;\n" ::: "memory"); }
// 128B-swizzle K-major descriptor (SBO = 1024: 8 token rows of 128 bytes; LBO unused).
__device__ __forceinline__ uint64_t make_desc_sw128(uint32_t saddr) {
  return static_cast<uint64_t>((saddr >> 4) & 0x3FFF) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// One k16 step of a lane's A fragment from its word `w` of the runtime layout (layout.h) and the table entries of
// the two rows' block scales.
__device__ __forceinline__ void dequant_step(uint32_t w, uint32_t sc_lo, uint32_t sc_hi, uint32_t (&a)[4]) {
  const uint32_t a3 = ((w >> 4) & 0x00C000C0u) | ((w >> 5) & 0x01000100u) | ((w << 1) & 0x80008000u);
  a[0] = bf16x2_mul(w & kPairMask, sc_lo);         // row g,   k 2t, 2t+1
  a[1] = bf16x2_mul((w << 3) & kPairMask, sc_hi);  // row g+8, k 2t, 2t+1
  a[2] = bf16x2_mul((w << 6) & kPairMask, sc_lo);  // row g,   k 2t+8, 2t+9
  a[3] = bf16x2_mul(a3, sc_hi);                    // row g+8, k 2t+8, 2t+9
}

// --- the kernel -----------------------------------------------------------------------------------------------------

template <int BT, typename OutT, int MODE, int ACT, typename XT>
__global__ void __launch_bounds__(kThreads, Tile<BT>::kMinBlocks)
    nvfp4_sm90_kernel(const __grid_constant__ GemmParams p, const __grid_constant__ CUtensorMap tm_act) {
  using T = Tile<BT>;
  static_assert(ACT == kActTma || BT <= 16, "the fused quantizer serves decode tiles");
  static_assert(MODE != kSplitCluster || BT <= 64, "split-K serves decode tiles");
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t smem_base = (raw_base + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (smem_base - raw_base);
  uint32_t* table = reinterpret_cast<uint32_t*>(smem + T::kRing);
  const uint32_t amax_base = smem_base + T::kRing + T::kTable;  // [rank][row] fp32
  float* amax_all = reinterpret_cast<float*>(smem + T::kRing + T::kTable);
  float* s2_row = reinterpret_cast<float*>(smem + T::kRing + T::kTable + T::kAmax);
  const uint32_t bar_base = smem_base + T::kRing + T::kTable + T::kAmax + T::kS2;
  auto full = [&](int s) { return bar_base + 8 * s; };
  auto empty = [&](int s) { return bar_base + 8 * (T::STAGES + s); };
  auto xraw = [&](int s) { return bar_base + 8 * (2 * T::STAGES + s); };
  const int tid = threadIdx.x;
  const int tiles_n = (p.N + 127) / 128;
  // Grouped GEMM: the tile counts of the groups, in the ring until its first use, then this CTA's tile in group_info.
  const bool grouped = MODE == kWholeK && p.group_offsets != nullptr;
  int* group_tiles = reinterpret_cast<int*>(smem);
  int* group_info = reinterpret_cast<int*>(smem + T::kRing + T::kTable + T::kAmax + T::kS2 + T::kBars);
  auto group_row = [&](int e) { return static_cast<int>(min(max(p.group_offsets[e], int64_t{0}), int64_t{p.M})); };
  if (grouped) {
    for (int e = tid; e < p.num_groups; e += kThreads)
      group_tiles[e] = (max(0, group_row(e + 1) - group_row(e)) + BT - 1) / BT;
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // the ring is written by TMA next
  }

  if (tid >= 128) table[tid - 128] = scale_entry(tid - 128);
  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < T::STAGES; ++s) {
      mbar_init(full(s), ACT == kActQuant ? 1 + kQuantWarps : 1);  // the copy's expect_tx (+ each quantizer warp)
      mbar_init(empty(s), 8);                        // one arrive per consumer warp
      mbar_init(xraw(s), 1);                         // the raw activations' TMA (fused quantizer)
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();

  if (grouped && tid < 32) {
    // Warp 0 finds the group of this CTA's slot: a running sum of the groups' tile counts, 32 groups at a time.
    const int slot = static_cast<int>(blockIdx.x) / tiles_n;
    int before = 0, found = -1, local = 0;
    for (int e0 = 0; e0 < p.num_groups && found < 0; e0 += 32) {
      const int c = e0 + tid < p.num_groups ? group_tiles[e0 + tid] : 0;
      int incl = c;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (tid >= o) incl += v;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, slot >= before + incl - c && slot < before + incl);
      if (hit) {
        const int l = __ffs(hit) - 1;
        found = e0 + l;
        local = slot - before - __shfl_sync(0xffffffffu, incl - c, l);
      }
      before += __shfl_sync(0xffffffffu, incl, 31);
    }
    if (tid == 0) {
      group_info[0] = found;
      if (found >= 0) {
        group_info[1] = group_row(found) + local * BT;
        group_info[2] = group_row(found + 1);
      }
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  if (grouped) __syncthreads();
  const int grp = grouped ? group_info[0] : 0;
  if (grp < 0) return;  // a slot past the last tile (the grid is an upper bound)

  // Tile coordinates. Grouped rasterisation (numerically irrelevant): groups of 16 weight tiles, token tiles inside a
  // group, weight tile fastest, so that a wave shares a few weight and activation tiles through L2. The grouped GEMM:
  // weight tile fastest within a slot.
  constexpr int kGroupN = 16;
  const int tiles_m = (p.M + BT - 1) / BT;
  const int pid = blockIdx.x;
  const int group = pid / (kGroupN * tiles_m);
  const int first_n = group * kGroupN;
  const int gn = min(kGroupN, tiles_n - first_n);
  const int within = pid - group * kGroupN * tiles_m;
  const int n0 = grouped ? (pid % tiles_n) * 128 : (first_n + within % gn) * 128;
  const int m0 = grouped ? group_info[1] : (within / gn) * BT;
  const int m_end = grouped ? group_info[2] : p.M;  // rows past it belong to another group or lie past M
  const int rank = MODE == kWholeK ? 0 : static_cast<int>(blockIdx.z);
  const int splits = MODE == kWholeK ? 1 : static_cast<int>(gridDim.z);
  const int c_begin = MODE == kWholeK ? 0 : rank * p.cpc;
  const int c_end = MODE == kWholeK ? p.nchunks : min(p.nchunks, c_begin + p.cpc);
  const int kbeg = c_begin * p.kc;
  const int kend = min(p.K, c_end * p.kc);
  const int ntiles = (kend - kbeg + T::BK - 1) / T::BK;
  const int rows_valid = min(BT, m_end - m0);
  const int slabs = min(8, (p.N + kSlabRows - 1) / kSlabRows - n0 / kSlabRows);
  const bool per_token = ACT == kActQuant && p.static_scale == nullptr;
  // A cluster first exchanges the partial row amaxes of its K ranges (every thread takes part in the cluster
  // barriers: one before the exchange, one after it).
  const bool amax_exchange = MODE == kSplitCluster && per_token;

  // Distributed shared memory may be written only once every CTA of the cluster runs.
  if (amax_exchange) cluster_sync();

  auto kgroups_in = [&](int kt) { return min(T::KG, (kend - (kbeg + kt * T::BK) + kKGroup - 1) / kKGroup); };

  if (tid < 128) {
    // ============================== producer warpgroup ==============================
    if constexpr (T::kSetMaxNreg) {
      // setmaxnreg.inc only draws on registers this CTA's warps released: 4 warps x (168 - 24) = 8 warps x (240 - 168).
      asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
    }
    // thread 0: the stage's weights and scales (and bf16 activations); `weights` also arms the stage's barrier with
    // every byte of the stage, so the activations may follow in a second call.
    auto issue = [&](int kt, bool weights = true, bool acts = true) {
      const int s = kt % T::STAGES;
      const int k0 = kbeg + kt * T::BK;
      const int kgc = kgroups_in(kt);
      const uint32_t stage = smem_base + s * T::kStage;
      const uint32_t bytes = slabs * kgc * kGroupBytes + (ACT == kActTma ? kgc * T::kActBox : 0);
      if (weights) mbar_expect_tx(full(s), bytes);
      if constexpr (ACT == kActQuant) {
        // The raw activations land in the stage's activation boxes (same 128B-swizzled layout), where the producer
        // warpgroup quantizes them in place; they complete on their own barrier.
        mbar_expect_tx(xraw(s), kgc * T::kActBox);
        for (int kg = 0; kg < kgc; ++kg) tma_2d(stage + kg * T::kActBox, &tm_act, k0 + kg * kKGroup, m0, xraw(s));
      }
      const uint8_t* src = p.w + grp * p.w_group_stride +
                           (static_cast<int64_t>(n0 / kSlabRows) * p.kg_total + k0 / kKGroup) * kGroupBytes;
      if (weights)
        for (int j = 0; j < slabs; ++j)
          bulk_g2s(stage + T::kAct + j * T::kSlabBytes, src + static_cast<int64_t>(j) * p.kg_total * kGroupBytes,
                   kgc * kGroupBytes, full(s));
      if constexpr (ACT == kActTma) {
        if (acts)
          for (int kg = 0; kg < kgc; ++kg) tma_2d(stage + kg * T::kActBox, &tm_act, k0 + kg * kKGroup, m0, full(s));
      }
    };
    if constexpr (ACT == kActTma) {
      if (tid == 0) {
        int kt = 0;
        if (p.after_prior) {
          // The weights of the first ring do not depend on the quantizer: they stream while it finishes.
          const int first = min(T::STAGES, ntiles);
          for (; kt < first; ++kt) issue(kt, true, false);
          grid_dependency_wait();
          for (int j = 0; j < first; ++j) issue(j, false, true);
        }
        for (; kt < ntiles; ++kt) {
          if (kt >= T::STAGES) mbar_wait(empty(kt % T::STAGES), ((kt / T::STAGES) - 1) & 1);
          issue(kt);
        }
      }
    } else {
      const int lane = tid % 32;
      // The first stages' slots are free: their weights are on the way while the row scales are computed.
      if (tid == 0)
        for (int kt = 0; kt < min(T::STAGES, ntiles); ++kt) issue(kt);
      const XT* x = static_cast<const XT*>(p.x);
      if (per_token) {
        // Partial row amaxes over this CTA's K range. |x| as uint32 bits orders like the float for non-negative
        // values, and every NaN (exponent all ones, mantissa non-zero) sorts above infinity: a uint max is torch.amax
        // (NaN wins), exact in any order. Eight 16-byte loads per thread are in flight at a time; a thread keeps
        // one running max per row it walks through and folds it into shared memory when the row changes.
        uint32_t* amax_bits = reinterpret_cast<uint32_t*>(s2_row);  // scratch until the decode scales are written
        if (tid < BT) amax_bits[tid] = 0u;
        producer_sync();
        const int per_row = (kend - kbeg) / 8;
        const int items = rows_valid * per_row;
        int cur_row = -1;
        uint32_t cur = 0u;
        constexpr int U = 8;
        for (int base = tid; base < items; base += 128 * U) {
          uint4 raw[U];
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int item = base + 128 * u;
            if (item < items) {
              const int r = item / per_row;
              raw[u] = *reinterpret_cast<const uint4*>(x + static_cast<int64_t>(m0 + r) * p.x_stride + kbeg +
                                                       (item - r * per_row) * 8);
            }
          }
#pragma unroll
          for (int u = 0; u < U; ++u) {
            const int item = base + 128 * u;
            if (item < items) {
              const int r = item / per_row;
              if (r != cur_row) {
                if (cur_row >= 0) atomicMax(&amax_bits[cur_row], cur);
                cur_row = r;
                cur = 0u;
              }
              const XT* e = reinterpret_cast<const XT*>(&raw[u]);
#pragma unroll
              for (int i = 0; i < 8; ++i) cur = max(cur, __float_as_uint(fabsf(to_float(e[i]))));
            }
          }
        }
        if (cur_row >= 0) atomicMax(&amax_bits[cur_row], cur);
        producer_sync();
        if (tid < rows_valid) {
          const float amax = __uint_as_float(amax_bits[tid]);
          if (amax_exchange) {
            for (int q = 0; q < splits; ++q) st_cluster_f32(amax_base + (rank * BT + tid) * 4, q, amax);
          } else {
            amax_all[tid] = amax;
          }
        }
        if (amax_exchange) cluster_sync();
        producer_sync();
        if (tid < rows_valid) {
          float amax = amax_all[tid];
          for (int q = 1; q < (amax_exchange ? splits : 1); ++q) amax = nan_max(amax, amax_all[q * BT + tid]);
          s2_row[tid] = row_decode_scale(amax);  // (the scratch use of s2_row ended at the barrier above)
        }
      } else if (tid < rows_valid) {
        s2_row[tid] = p.static_scale[grp];
      }
      producer_sync();

      int ntiles_quantized = ntiles;
      if (tid >= 32 * kQuantWarps) {
        // The last producer warp issues the stages past the first ring as their slots free up, so that the raw
        // activations of several stages are in flight while the other warps quantize (a quantizer that issued its
        // own next stage and then waited for it served one stage per copy latency).
        if (lane == 0)
          for (int kt = T::STAGES; kt < ntiles; ++kt) {
            mbar_wait(empty(kt % T::STAGES), ((kt / T::STAGES) - 1) & 1);
            issue(kt);
          }
        ntiles_quantized = 0;
      }
      for (int kt = 0; kt < ntiles_quantized; ++kt) {
        const int s = kt % T::STAGES;
        const int k0 = kbeg + kt * T::BK;
        const int blocks_per_row = min(kgroups_in(kt) * 4, (p.K - k0) / kQuantBlock);  // past K: TMA zeros
        const uint32_t stage = smem_base + s * T::kStage;
        mbar_wait(xraw(s), (kt / T::STAGES) & 1);
        // Rows past M arrive as TMA zeros and are left so (their columns of the product are not stored).
        for (int b = tid; b < rows_valid * blocks_per_row; b += 32 * kQuantWarps) {
          const int r = b / blocks_per_row, blk = b - r * blocks_per_row;
          // 128B swizzle: 16-byte chunk j of token row r sits at chunk j ^ (r % 8) of the row's 128 bytes.
          const uint32_t row_addr = stage + (blk / 4) * T::kActBox + r * 128;
          const int j = (blk % 4) * 2;
          const uint32_t a0 = row_addr + ((j ^ (r & 7)) << 4), a1 = row_addr + (((j + 1) ^ (r & 7)) << 4);
          __align__(16) uint4 raw[2] = {lds128(a0), lds128(a1)};
          const XT* e = reinterpret_cast<const XT*>(raw);
          float v[kQuantBlock];
#pragma unroll
          for (int i = 0; i < kQuantBlock; ++i) v[i] = to_float(e[i]);
          __nv_fp8_storage_t scale_byte;
          float scale_value;
          uint32_t codes[kQuantBlock];
          quantize_block16(v, s2_row[r], scale_byte, scale_value, codes);
          __align__(16) __nv_bfloat16 q[kQuantBlock];
#pragma unroll
          for (int i = 0; i < kQuantBlock; ++i) q[i] = dequant_bf16(codes[i], scale_value);
          sts128(a0, reinterpret_cast<const uint4*>(q)[0]);
          sts128(a1, reinterpret_cast<const uint4*>(q)[1]);
        }
        // Generic-proxy stores read by wgmma (async proxy) next.
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncwarp();
        if (lane == 0) mbar_arrive(full(s));
      }
    }
    __syncwarp();  // the warp reconverges before the aligned cluster barriers
    if constexpr (MODE == kSplitCluster) {  // the epilogue's two cluster barriers
      cluster_sync();
      cluster_sync();
    }
    return;
  }

  // ============================== consumer warpgroups ==============================
  if constexpr (T::kSetMaxNreg) asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");
  if (amax_exchange) cluster_sync();
  const int ctid = tid - 128;
  const int wg = ctid / 128, warp = (ctid / 32) % 4, lane = ctid % 32, g = lane / 4, t = lane % 4;
  const int rA = wg * 64 + warp * 16 + g;  // this thread's rows: rA and rA + 8 (tile-local)
  const uint32_t slab_off = T::kAct + (wg * 4 + warp) * T::kSlabBytes;

  constexpr int NS = MODE == kWholeK ? 1 : T::kMaxCpc;
  float acc[BT / 2];
  float sums[NS][BT / 2];  // kWholeK: the running total; split modes: each chunk's sum
#pragma unroll
  for (int i = 0; i < BT / 2; ++i) {
    acc[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < NS; ++c) sums[c][i] = 0.0f;
  }
  uint32_t afrag[2][4][4];
  uint4 wv;
  uint2 sv;
  auto load_raw = [&](uint32_t stage, int kg) {
    const uint32_t base = stage + slab_off + kg * kGroupBytes;
    wv = lds128(base + lane * 16);
    sv = lds64(base + kGroupWeightBytes + g * 8);
  };
  auto dequant = [&](uint32_t(&af)[4][4]) {
    const uint32_t wd[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint32_t sw = (s < 2 ? sv.x : sv.y) >> (16 * (s % 2));  // bytes: row g, row g+8 of step s
      dequant_step(wd[s], table[sw & 0xFF], table[(sw >> 8) & 0xFF], af[s]);
    }
  };

  int local_chunk = 0;
  mbar_wait(full(0), 0);
  load_raw(smem_base, 0);
  for (int kt = 0; kt < ntiles; ++kt) {
    const int s = kt % T::STAGES;
    const uint32_t stage = smem_base + s * T::kStage;
    const int kgc = kgroups_in(kt);
#pragma unroll
    for (int kg = 0; kg < T::KG; ++kg) {
      if (kg < kgc) {
        uint32_t(&af)[4][4] = afrag[kg & 1];
        dequant(af);
        wgmma_fence();
        fence_regs(acc);
#pragma unroll
        for (int s4 = 0; s4 < 4; ++s4)
          WgmmaRS<BT>::mma(acc, af[s4], make_desc_sw128(stage + kg * T::kActBox + s4 * 32), 1);
        wgmma_commit();
        fence_regs(acc);
        // The next group's raw words, read while this group's wgmmas run.
        if (kg + 1 < kgc) {
          load_raw(stage, kg + 1);
        } else if (kt + 1 < ntiles) {
          const int s1 = (kt + 1) % T::STAGES;
          mbar_wait(full(s1), ((kt + 1) / T::STAGES) & 1);
          load_raw(smem_base + s1 * T::kStage, 0);
        }
        wgmma_wait<1>();
        // Every group issued before this one has completed, the previous stage's last one included: its slot is free.
        if (kg == 0 && kt > 0 && lane == 0) mbar_arrive(empty((kt - 1) % T::STAGES));
      }
    }
    const int k1 = kbeg + (kt + 1) * T::BK;
    if (k1 % p.kc == 0 || kt + 1 == ntiles) {  // a chunk ends with this stage
      wgmma_wait<0>();
      fence_regs(acc);
#pragma unroll
      for (int i = 0; i < BT / 2; ++i) {
        if constexpr (MODE == kWholeK) {
          sums[0][i] = __fadd_rn(sums[0][i], acc[i]);
        } else {
#pragma unroll
          for (int c = 0; c < NS; ++c)
            if (c == local_chunk) sums[c][i] = acc[i];
        }
        acc[i] = 0.0f;
      }
      ++local_chunk;
    }
  }
  wgmma_wait<0>();
  if (p.after_prior) grid_dependency_wait();  // the epilogue reads the quantizer's per-row alphas

  // acc/sums index i = j*4 + h*2 + e holds token m0 + 8j + 2t + e, row n0 + rA + 8h.
  auto alpha_of = [&](int m) {
    if constexpr (ACT == kActQuant) return row_alpha(s2_row[m - m0], p.alpha[grp]);
    if (grouped) return p.row_scale ? row_alpha(p.row_scale[m], p.alpha[grp]) : p.alpha[grp];
    return p.alpha[p.alpha_per_row ? m : 0];
  };
  if constexpr (MODE == kWholeK) {
#pragma unroll
    for (int i = 0; i < BT / 2; ++i) {
      const int j = i / 4, h = (i / 2) % 2, e = i % 2;
      const int m = m0 + 8 * j + 2 * t + e, n = n0 + rA + 8 * h;
      if (m < m_end && n < p.N) store_output<OutT>(p, m, n, sums[0][i], alpha_of(m));
    }
  } else if constexpr (MODE == kSplitPartials) {
#pragma unroll
    for (int i = 0; i < BT / 2; ++i) {
      const int j = i / 4, h = (i / 2) % 2, e = i % 2;
      const int m = m0 + 8 * j + 2 * t + e, n = n0 + rA + 8 * h;
      if (m < p.M && n < p.N) {
#pragma unroll
        for (int c = 0; c < NS; ++c)
          if (c < c_end - c_begin)
            p.partial[(static_cast<int64_t>(c_begin + c) * p.M + m) * p.N + n] = sums[c][i];
      }
    }
  } else {
    // Slot i of every thread is finished by rank i % splits: each rank pushes its chunk sums for slot i into that
    // rank's shared memory (the stage ring, free once every rank is past its main loop), then the owner adds the
    // nchunks values in chunk order to zero, which is the order of the whole-K and partials paths.
    cluster_sync();  // every CTA of the cluster has stopped reading its ring
    const uint32_t inbox = smem_base;  // [owned slot][chunk][256 consumer threads] fp32, in the owner's layout
#pragma unroll
    for (int i = 0; i < BT / 2; ++i) {
      const int owner = i % splits, local_slot = i / splits;
#pragma unroll
      for (int c = 0; c < NS; ++c)
        if (c < c_end - c_begin)
          st_cluster_f32(inbox + ((local_slot * p.nchunks + c_begin + c) * 256 + ctid) * 4, owner, sums[c][i]);
    }
    cluster_sync();  // every push into this CTA has landed
    const float* box = reinterpret_cast<const float*>(smem);
    for (int local_slot = 0, i = rank; i < BT / 2; ++local_slot, i += splits) {
      float total = 0.0f;
      for (int c = 0; c < p.nchunks; ++c) total = __fadd_rn(total, box[(local_slot * p.nchunks + c) * 256 + ctid]);
      const int j = i / 4, h = (i / 2) % 2, e = i % 2;
      const int m = m0 + 8 * j + 2 * t + e, n = n0 + rA + 8 * h;
      if (m < p.M && n < p.N) store_output<OutT>(p, m, n, total, alpha_of(m));
    }
  }
}

// Ordered reduction of the split partials: total = 0 + s0 + s1 + ... (the order of the in-CTA chunk total).
template <typename OutT>
__global__ void nvfp4_sm90_reduce_kernel(const __grid_constant__ GemmParams p) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t MN = static_cast<int64_t>(p.M) * p.N;
  if (idx >= MN) return;
  float total = 0.0f;
  for (int c = 0; c < p.nchunks; ++c) total = __fadd_rn(total, p.partial[c * MN + idx]);
  const int m = static_cast<int>(idx / p.N), n = static_cast<int>(idx % p.N);
  store_output<OutT>(p, m, n, total, p.alpha[p.alpha_per_row ? m : 0]);
}

// Host side of one token tile, defined in gemm_btN.cu (tile.cuh).
struct LaunchArgs {
  int mode;      // KernelMode
  int act;       // ActSource
  int out_dtype;  // nvfp4_dtype; with kActQuant also the activations' dtype
  int splits;    // CTAs per tile along K (gridDim.z) in the split modes
  int64_t grouped_slots;  // grouped GEMM (GemmParams::group_offsets): token tiles launched per weight tile; else 0
  int pdl;                // launch as a programmatic dependent of the previous kernel (GemmParams::after_prior)
};
struct TileEntry {
  int (*launch)(const GemmParams& p, const LaunchArgs& a, const CUtensorMap* tm_act, cudaStream_t stream);
  // CTAs per SM of this tile's kernel, and how many clusters of `splits` CTAs fit at once (0: none can be scheduled).
  int (*occupancy)(int splits, int* ctas_per_sm, int* max_clusters);
};
TileEntry tile_bt8();
TileEntry tile_bt16();
TileEntry tile_bt32();
TileEntry tile_bt64();
TileEntry tile_bt128();

}  // namespace sm90
}  // namespace nvfp4
