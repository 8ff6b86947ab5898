// Hopper (sm_90a) NVFP4 GEMM, warp-specialised large-M kernel: D^T = W * X^T with RS-wgmma.
//
// CTA = 3 warpgroups (384 threads): warpgroup 0 is the producer (one thread issues TMA loads; setmaxnreg.dec),
// warpgroups 1 and 2 are consumers (setmaxnreg.inc), each owning 64 weight rows x BT tokens of a 128 x BT tile.
// Per BK = 128 K-tile one stage holds: activations as two 64-k TMA boxes [BT tokens][128 B] with 128B swizzle
// (read by wgmma directly as the K-major B operand), weights [128 rows][64 B] with 64B swizzle (conflict-free
// 16-byte LDS), and the two 512-byte 128x4 scale atoms (a 4-d TMA box, zero-filled past K).
// full/empty mbarriers per stage; no __syncthreads in the main loop; one wgmma commit group stays in flight while
// the next 64-k group is dequantised (double-buffered A fragments).
// Numerics are identical to kernel.cuh: same dequantisation (e2m1 * 2^-126 bits times bf16 (scale * 2^119)),
// same k16 wgmma chain per K chunk of length kc starting from zero, same in-order chunk total, same epilogue.
#pragma once
#include <cuda.h>

#include "kernel.cuh"

namespace nvfp4 {
namespace sm90 {

#ifndef NVFP4_WS_EXP
#define NVFP4_WS_EXP 0
#endif
constexpr int kWsBK = 128;
constexpr int kWsThreads = 384;

template <int BT, int STAGES>
struct WsLayout {
  static constexpr int kAHalf = BT * 128;  // one 64-k activation box
  static constexpr int kA = 2 * kAHalf;
  static constexpr int kW = 128 * 64;
  static constexpr int kS = 1024;
  static constexpr int kStage = kA + kW + kS;
  static constexpr int kTable = 1024;
  static constexpr int kBars = 2 * STAGES * 8;
  static constexpr int kTotal = 1024 + STAGES * kStage + kTable + kBars;  // +1024: runtime alignment slack
  static_assert(kAHalf % 1024 == 0 && kStage % 1024 == 0, "128B-swizzle boxes need 1024-byte alignment");
};

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
__device__ __forceinline__ void tma_2d(uint32_t dst, const CUtensorMap* tm, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(tm)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_4d(uint32_t dst, const CUtensorMap* tm, int c0, int c1, int c2, int c3, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(tm)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint32_t lds32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
// byte `sel` (0..3, run time) of w, isolated in bits 0..7
__device__ __forceinline__ uint32_t byte_of(uint32_t w, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, 0, %2;\n" : "=r"(d) : "r"(w), "r"(sel | 0x4440u));
  return d;
}
// 128B-swizzle K-major descriptor (SBO = 1024: 8 token rows of 128 bytes; LBO unused).
__device__ __forceinline__ uint64_t make_desc_sw128(uint32_t saddr) {
  return static_cast<uint64_t>((saddr >> 4) & 0x3FFF) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

template <int BT, int STAGES, typename OutT>
__global__ void __launch_bounds__(kWsThreads, 1)
    nvfp4_sm90_ws_kernel(const __grid_constant__ GemmParams p, const __grid_constant__ CUtensorMap tm_act,
                         const __grid_constant__ CUtensorMap tm_w, const __grid_constant__ CUtensorMap tm_s) {
  using L = WsLayout<BT, STAGES>;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const uint32_t raw_base = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t smem_base = (raw_base + 1023u) & ~1023u;
  uint8_t* smem = smem_raw + (smem_base - raw_base);
  uint32_t* table = reinterpret_cast<uint32_t*>(smem + STAGES * L::kStage);
  const uint32_t bar_base = smem_base + STAGES * L::kStage + L::kTable;  // full[s] at +8s, empty[s] at +8(STAGES+s)
  const int tid = threadIdx.x;

  if (tid >= 128) table[tid - 128] = scale_entry(tid - 128);
  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(bar_base + 8 * s, 1);
      mbar_init(bar_base + 8 * (STAGES + s), 8);  // one arrive per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();

  // Grouped rasterisation (numerically irrelevant): groups of kGroupN weight tiles, token tiles inside a group,
  // weight tile fastest, so one wave shares a few weight tiles and a few activation tiles through L2.
#ifdef NVFP4_WS_GROUP
  constexpr int kGroupN = NVFP4_WS_GROUP;
#else
  constexpr int kGroupN = 16;
#endif
  const int tiles_n = (p.N + 127) / 128;
  const int tiles_m = (p.M + BT - 1) / BT;
  const int pid = blockIdx.x;
  const int group = pid / (kGroupN * tiles_m);
  const int first_n = group * kGroupN;
  const int gn = min(kGroupN, tiles_n - first_n);
  const int within = pid - group * kGroupN * tiles_m;
  const int n_tile = first_n + within % gn;
  const int m_tile = within / gn;
  const int n0 = n_tile * 128, m0 = m_tile * BT;
  const int ntiles = (p.K + kWsBK - 1) / kWsBK;

  if (tid < 128) {
    // Register accounting (launch cap 168 for 384 threads): setmaxnreg.inc only draws on registers this CTA's
    // warps released, so 4 producer warps x (168 - 24) must cover 8 consumer warps x (240 - 168) (both 18432).
    // A larger producer value (tried: 32) makes the consumers' inc wait forever.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n");
    if (tid == 0) {
      for (int kt = 0; kt < ntiles; ++kt) {
        const int s = kt % STAGES;
        if (kt >= STAGES) mbar_wait(bar_base + 8 * (STAGES + s), ((kt / STAGES) - 1) & 1);
        const uint32_t full = bar_base + 8 * s;
        const uint32_t sA = smem_base + s * L::kStage;
        mbar_expect_tx(full, L::kStage);
        const int k0 = kt * kWsBK;
        tma_2d(sA, &tm_act, k0, m0, full);
        tma_2d(sA + L::kAHalf, &tm_act, k0 + 64, m0, full);
        tma_2d(sA + L::kA, &tm_w, k0 / 2, n0, full);
        tma_4d(sA + L::kA + L::kW, &tm_s, 0, 0, k0 / 64, n0 / 128, full);
      }
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n");

  const int ctid = tid - 128;
  const int wg = ctid / 128, warp = (ctid / 32) % 4, lane = ctid % 32, g = lane / 4, t = lane % 4;
  const int rA = wg * 64 + warp * 16 + g;  // rows rA and rA + 8 (tile-local)
  const uint32_t swz = (rA >> 1) & 3;
  const uint32_t wofsA = rA * 64, wofsB = (rA + 8) * 64;
  const uint32_t srowA = (rA % 32) * 16 + (rA / 32) * 4;
  const uint32_t srowB = ((rA + 8) % 32) * 16 + ((rA + 8) / 32) * 4;
  const int tiles_per_chunk = p.kc / kWsBK;

  float acc[BT / 2];
  float total[BT / 2];
#pragma unroll
  for (int i = 0; i < BT / 2; ++i) {
    acc[i] = 0.0f;
    total[i] = 0.0f;
  }
  uint32_t afrag[2][4][4];

  // Raw shared-memory words of one 64-k group (weights of rows rA, rA+8 for 4 k16 steps, their 4 scale bytes),
  // loaded one group ahead so that the LDS latency hides behind the wgmma group in flight.
  struct Raw {
    uint4 va[2], vb[2];
    uint32_t scA, scB;
  };
  auto load_raw = [&](Raw& r, uint32_t stage_addr, int kg) {
    const uint32_t sW = stage_addr + L::kA;
    const uint32_t sS = sW + L::kW;
    r.scA = lds32(sS + kg * 512 + srowA);
    r.scB = lds32(sS + kg * 512 + srowB);
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {
      const uint32_t j = kg * 2 + jj;  // 16-byte chunk of the 64-byte weight row = k16 steps 2j, 2j+1
      r.va[jj] = lds128(sW + wofsA + ((j ^ swz) << 4));
      r.vb[jj] = lds128(sW + wofsB + ((j ^ swz) << 4));
    }
  };
  auto dequant = [&](const Raw& r, uint32_t(&af)[4][4]) {
#pragma unroll
    for (int s4 = 0; s4 < 4; ++s4) {
      const int jj = s4 / 2, h = s4 % 2;
      const uint32_t scA = table[(r.scA >> (8 * s4)) & 0xFF];
      const uint32_t scB = table[(r.scB >> (8 * s4)) & 0xFF];
      const uint32_t a0 = h ? r.va[jj].z : r.va[jj].x, a1 = h ? r.va[jj].w : r.va[jj].y;
      const uint32_t b0 = h ? r.vb[jj].z : r.vb[jj].x, b1 = h ? r.vb[jj].w : r.vb[jj].y;
#if NVFP4_WS_EXP == 1  // dev experiment: no dequantisation (wrong results; timing only)
      af[s4][0] = a0 ^ scA; af[s4][1] = b0 ^ scB; af[s4][2] = a1; af[s4][3] = b1;
#else
      af[s4][0] = bf16x2_mul(e2m1x2_raw(byte_of(a0, t)), scA);  // row g,   k 2t..2t+1
      af[s4][1] = bf16x2_mul(e2m1x2_raw(byte_of(b0, t)), scB);  // row g+8, k 2t..2t+1
      af[s4][2] = bf16x2_mul(e2m1x2_raw(byte_of(a1, t)), scA);  // row g,   k 2t+8..2t+9
      af[s4][3] = bf16x2_mul(e2m1x2_raw(byte_of(b1, t)), scB);  // row g+8, k 2t+8..2t+9
#endif
    }
  };

  Raw raw;
  mbar_wait(bar_base, 0);
  load_raw(raw, smem_base, 0);
  for (int kt = 0; kt < ntiles; ++kt) {
    const int s = kt % STAGES;
    const uint32_t sA = smem_base + s * L::kStage;
#pragma unroll
    for (int kg = 0; kg < 2; ++kg) {
      uint32_t(&af)[4][4] = afrag[kg];
      dequant(raw, af);
      wgmma_fence();
      fence_regs(acc);
#pragma unroll
      for (int s4 = 0; s4 < 4; ++s4) {
        const uint64_t desc = make_desc_sw128(sA + kg * L::kAHalf + s4 * 32);
#if NVFP4_WS_EXP == 2  // dev experiment: no MMA (wrong results; timing only)
        acc[s4] += __uint_as_float(af[s4][0] ^ af[s4][1] ^ af[s4][2] ^ af[s4][3] ^ static_cast<uint32_t>(desc));
#else
        WgmmaRS<BT>::mma(acc, af[s4], desc, 1);
#endif
      }
      wgmma_commit();
      fence_regs(acc);
      // prefetch the next group's raw words (next stage after the tile's second group)
      if (kg == 0) {
        load_raw(raw, sA, 1);
      } else if (kt + 1 < ntiles) {
        const int s1 = (kt + 1) % STAGES;
        mbar_wait(bar_base + 8 * s1, ((kt + 1) / STAGES) & 1);
        load_raw(raw, smem_base + s1 * L::kStage, 0);
      }
      wgmma_wait<1>();
      // The group issued before this one (the previous tile's second group when kg == 0) has completed: its
      // stage is no longer read by this warp (its raw words were consumed before this tile's first group).
      if (kg == 0 && kt > 0 && lane == 0) mbar_arrive(bar_base + 8 * (STAGES + (kt - 1) % STAGES));
    }
    if ((kt + 1) % tiles_per_chunk == 0 || kt + 1 == ntiles) {
      wgmma_wait<0>();
      fence_regs(acc);
#pragma unroll
      for (int i = 0; i < BT / 2; ++i) {
        total[i] = __fadd_rn(total[i], acc[i]);
        acc[i] = 0.0f;
      }
    }
  }
  wgmma_wait<0>();

  // Epilogue. acc index j*4 + h*2 + e: token 8j + 2t + e, row rA + 8h.
#pragma unroll
  for (int j = 0; j < BT / 8; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int m = m0 + 8 * j + 2 * t + e;
        const int n = n0 + rA + 8 * h;
        if (m < p.M && n < p.N) store_output<OutT>(p, m, n, total[j * 4 + h * 2 + e]);
      }
    }
  }
}

// Host launcher (defined in gemm_ws_bt128.cu). Returns NVFP4_OK or an error; the caller checks ws_supported().
int launch_ws_bt128(const GemmParams& p, int out_dtype, cudaStream_t stream);

// The TMA path needs 16-byte aligned global rows and bases: weight rows are K/2 bytes (K % 32 == 0) and the
// packed weights 16-byte aligned (the ABI only promises 8).
inline bool ws_supported(const GemmParams& p) {
  return p.K % 32 == 0 && (reinterpret_cast<uintptr_t>(p.w) % 16) == 0 &&
         (reinterpret_cast<uintptr_t>(p.act) % 16) == 0 && (p.act_stride * 2) % 16 == 0;
}

}  // namespace sm90
}  // namespace nvfp4
