// Standalone dev harness for the sm_90a NVFP4 GEMM (no torch): correctness vs a host float64 reference,
// bitwise batch invariance, argument checks, and CUDA-graph timing against cuBLAS bf16.
// Usage: harness [check|bench|all] [quick]
#ifndef NO_CUBLAS
#include <cublas_v2.h>
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../config.h"
#include "nvfp4/nvfp4.h"

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #x, __FILE__, __LINE__, cudaGetErrorString(e_)); \
      exit(1);                                                                                  \
    }                                                                                           \
  } while (0)
#define CKN(x)                                                                              \
  do {                                                                                      \
    int r_ = (x);                                                                           \
    if (r_ != NVFP4_OK) {                                                                   \
      fprintf(stderr, "nvfp4 error %d at %s:%d: %s\n", r_, __FILE__, __LINE__, nvfp4_last_error()); \
      exit(1);                                                                              \
    }                                                                                       \
  } while (0)

static int g_fail = 0;
static bool g_decode_only = false;
static bool g_prefill_only = false;

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

__global__ void gen_bytes(uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = static_cast<uint8_t>(hash32(seed * 0x9E3779B97F4A7C15ULL + i));
}

// Swizzled scales for N rows, K/16 groups: wide spread (all finite positive e4m3 codes incl. subnormals),
// ~4% zero blocks, some rows restricted to small scales; padding zero.
__global__ void gen_scales(uint8_t* p, int N, int K, uint64_t seed) {
  const int G = K / 16, G4 = (K + 63) / 64;
  const int Np = (N + 127) / 128 * 128;
  const size_t total = (size_t)Np * G4 * 4;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    // invert offset -> (n, g)
    const size_t atom = i / 512;
    const int within = static_cast<int>(i % 512);
    const int n = static_cast<int>(atom / G4) * 128 + (within / 16) % 32 + ((within % 16) / 4) * 32;
    const int g = static_cast<int>(atom % G4) * 4 + within % 4;
    uint8_t v = 0;
    if (n < N && g < G) {
      uint32_t h = hash32(seed * 0x9E3779B97F4A7C15ULL + (uint64_t)n * 1000003ULL + g);
      if (h % 25 == 0) {
        v = 0;
      } else {
        int code = 1 + (h >> 8) % 126;  // 0x01..0x7E
        if (n % 5 == 1) code = 1 + (h >> 8) % 40;  // rows of tiny scales (incl. subnormals)
        if (n % 7 == 2) code = 0x60 + (h >> 8) % 31;  // rows of large scales (up to 448)
        v = static_cast<uint8_t>(code);
      }
    }
    p[i] = v;
  }
}

__global__ void gen_act(__nv_bfloat16* p, int64_t M, int64_t K, int64_t stride, uint64_t seed) {
  const size_t total = (size_t)M * stride;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int64_t m = i / stride, k = i % stride;
    uint32_t h = hash32(seed * 0x9E3779B97F4A7C15ULL + i);
    float u = ((h & 0xFFFFFF) / 16777216.0f) * 2.0f - 1.0f;
    float v = u * ldexpf(1.0f, static_cast<int>(m % 9) - 4);
    if ((h >> 24) % 17 == 0) v = 0.0f;
    p[i] = __float2bfloat16(k < K ? v : 1.0e30f);  // padding columns poisoned: must never be read
  }
}

__global__ void fill_u16(uint16_t* p, size_t n, uint16_t v) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = v;
}

__global__ void dequant_bf16(const uint8_t* w, const uint8_t* s, __nv_bfloat16* out, int N, int K) {
  const int G4 = (K + 63) / 64;
  const size_t total = (size_t)N * K;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int n = static_cast<int>(i / K), k = static_cast<int>(i % K), g = k / 16;
    const uint8_t b = w[(size_t)n * (K / 2) + k / 2];
    const int code = (k & 1) ? (b >> 4) : (b & 15);
    const float mags[8] = {0.f, 0.5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    float v = mags[code & 7] * ((code & 8) ? -1.f : 1.f);
    const uint8_t sb = s[((size_t)(n / 128) * G4 + g / 4) * 512 + (n % 32) * 16 + ((n % 128) / 32) * 4 + (g % 4)];
    const int e = (sb >> 3) & 15, m = sb & 7;
    const float sc = e ? ldexpf(1.f + m / 8.f, e - 7) : ldexpf(m / 8.f, -6);
    out[i] = __float2bfloat16(v * sc);
  }
}

static double e4m3_host(uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  return e ? std::ldexp(1.0 + m / 8.0, e - 7) : std::ldexp(m / 8.0, -6);
}
static float bf2f(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static float h2f_host(uint16_t h) { return __half2float(*reinterpret_cast<__half*>(&h)); }
// Reference rounded to the output dtype: the kernel's only allowed deviation is fp32 accumulation order, so its
// error is measured against round(ref); the bf16 output rounding alone (~1.2e-3 rel) would swamp a 1e-3 bound.
static double round_out(double v, bool fp16) {
  return fp16 ? (double)__half2float(__float2half_rn((float)v)) : (double)__bfloat162float(__float2bfloat16_rn((float)v));
}

struct Problem {
  int N, K;
  uint8_t *w = nullptr, *s = nullptr;
  size_t wbytes, sbytes;
  std::vector<double> wdq;  // host dequantised [N, K] (filled lazily)
  void alloc(int n, int k, uint64_t seed) {
    N = n;
    K = k;
    wbytes = (size_t)N * K / 2;
    sbytes = (size_t)((N + 127) / 128 * 128) * ((K + 63) / 64) * 4;
    CK(cudaMalloc(&w, wbytes));
    CK(cudaMalloc(&s, sbytes));
    gen_bytes<<<1024, 256>>>(w, wbytes, seed);
    gen_scales<<<1024, 256>>>(s, N, K, seed + 1);
    CK(cudaGetLastError());
  }
  void host_dequant() {
    std::vector<uint8_t> hw(wbytes), hs(sbytes);
    CK(cudaMemcpy(hw.data(), w, wbytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hs.data(), s, sbytes, cudaMemcpyDeviceToHost));
    const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    const int G4 = (K + 63) / 64;
    wdq.resize((size_t)N * K);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) {
        const uint8_t b = hw[(size_t)n * (K / 2) + k / 2];
        const int code = (k & 1) ? (b >> 4) : (b & 15);
        const int g = k / 16;
        const double sc = e4m3_host(hs[((size_t)(n / 128) * G4 + g / 4) * 512 + (n % 32) * 16 + ((n % 128) / 32) * 4 + (g % 4)]);
        wdq[(size_t)n * K + k] = mags[code & 7] * ((code & 8) ? -1 : 1) * sc;
      }
  }
  void release() {
    cudaFree(w);
    cudaFree(s);
  }
};

struct Ctx {
  void* ws = nullptr;
  size_t ws_bytes = 0;
  void ensure(size_t b) {
    if (b > ws_bytes) {
      if (ws) CK(cudaFree(ws));
      CK(cudaMalloc(&ws, b));
      ws_bytes = b;
    }
  }
};

static int run_gemm(Ctx& c, const Problem& P, const __nv_bfloat16* act, int64_t stride, int64_t M, const float* alpha,
                    int per_row, const void* bias, void* out, int dtype, int64_t ostride, int inv, cudaStream_t st,
                    const uint8_t* w = nullptr) {
  size_t need = 0;
  CKN(nvfp4_sm90_gemm_workspace_size(M, P.N, P.K, inv, &need));
  c.ensure(need);
  return nvfp4_sm90_gemm(act, stride, M, P.N, P.K, w ? w : P.w, P.s, alpha, per_row, bias, out, dtype, ostride, inv,
                         c.ws, c.ws_bytes, st);
}

// ---------------------------------------------------------------- correctness + invariance
static void check_shape(Ctx& c, int N, int K, bool quick) {
  Problem P;
  P.alloc(N, K, 1234 + N * 7 + K);
  P.host_dequant();
  const int Mmax = 4096;
  const int64_t stride = K + 8 * ((N % 3) + (K % 2 == 0 ? 0 : 1));  // padded rows on some shapes
  __nv_bfloat16* act;
  CK(cudaMalloc(&act, (size_t)Mmax * stride * 2));
  gen_act<<<1024, 256>>>(act, Mmax, K, stride, 99 + N);
  float* alpha;
  CK(cudaMalloc(&alpha, Mmax * 4));
  {
    std::vector<float> ha(Mmax);
    for (int i = 0; i < Mmax; ++i) ha[i] = 0.5f + (i % 13) * 0.125f;
    CK(cudaMemcpy(alpha, ha.data(), Mmax * 4, cudaMemcpyHostToDevice));
  }
  uint16_t* bias;
  CK(cudaMalloc(&bias, N * 2));
  {
    std::vector<uint16_t> hb(N);
    for (int i = 0; i < N; ++i) {
      __nv_bfloat16 b = __float2bfloat16(((i * 37) % 101 - 50) * 0.01f);
      memcpy(&hb[i], &b, 2);
    }
    CK(cudaMemcpy(bias, hb.data(), N * 2, cudaMemcpyHostToDevice));
  }
  const int64_t ostride = N + (N % 2);
  uint16_t *single, *multi;
  CK(cudaMalloc(&single, (size_t)Mmax * ostride * 2));
  CK(cudaMalloc(&multi, (size_t)Mmax * ostride * 2));
  std::vector<uint16_t> hs((size_t)Mmax * ostride), hm((size_t)Mmax * ostride);
  std::vector<uint16_t> hact((size_t)Mmax * stride);
  CK(cudaMemcpy(hact.data(), act, hact.size() * 2, cudaMemcpyDeviceToHost));
  std::vector<float> halpha(Mmax);
  CK(cudaMemcpy(halpha.data(), alpha, Mmax * 4, cudaMemcpyDeviceToHost));
  std::vector<uint16_t> hbias(N);
  CK(cudaMemcpy(hbias.data(), bias, N * 2, cudaMemcpyDeviceToHost));

  auto ref_err = [&](const std::vector<uint16_t>& out, int64_t row0, const std::vector<int>& rows, bool fp16,
                     bool per_row, bool with_bias) {
    double num = 0, den = 0;
    for (int r : rows) {
      const int64_t gr = row0 + r;
      for (int n = 0; n < N; ++n) {
        double acc = 0;
        const double* wr = &P.wdq[(size_t)n * K];
        const uint16_t* ar = &hact[(size_t)gr * stride];
        for (int k = 0; k < K; ++k) acc += (double)bf2f(ar[k]) * wr[k];
        double ref = round_out(acc * (per_row ? halpha[r] : halpha[0]) + (with_bias ? bf2f(hbias[n]) : 0.0), fp16);
        const uint16_t o = out[(size_t)r * ostride + n];
        double got = fp16 ? h2f_host(o) : bf2f(o);
        if (std::isnan(got)) got = 1e300;
        num += (got - ref) * (got - ref);
        den += ref * ref;
      }
    }
    return std::sqrt(num / std::max(den, 1e-300));
  };

  for (int inv = 1; inv >= 0; --inv) {
    const auto plan1 = nvfp4::sm90::make_plan(1, N, K, inv, 132);
    // singles: every row alone
    fill_u16<<<1024, 256>>>(single, (size_t)Mmax * ostride, 0x7FC1);
    for (int r = 0; r < Mmax; ++r)
      CKN(run_gemm(c, P, act + (size_t)r * stride, stride, 1, alpha + r, 1, bias, single + (size_t)r * ostride,
                   NVFP4_DTYPE_BF16, ostride, inv, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(hs.data(), single, hs.size() * 2, cudaMemcpyDeviceToHost));
    // reference on sample rows of the singles
    std::vector<int> samp;
    for (int r = 0; r < Mmax; r += quick ? 1024 : 331) samp.push_back(r);
    samp.push_back(Mmax - 1);
    {
      std::vector<uint16_t> tmp(samp.size() * ostride);
      std::vector<int> idx;
      for (size_t i = 0; i < samp.size(); ++i) {
        memcpy(&tmp[i * ostride], &hs[(size_t)samp[i] * ostride], ostride * 2);
      }
      // ref_err indexes out by r, alpha by r: build a compacted view
      double num = 0, den = 0;
      for (size_t i = 0; i < samp.size(); ++i) {
        const int r = samp[i];
        for (int n = 0; n < N; ++n) {
          double acc = 0;
          const double* wr = &P.wdq[(size_t)n * K];
          const uint16_t* ar = &hact[(size_t)r * stride];
          for (int k = 0; k < K; ++k) acc += (double)bf2f(ar[k]) * wr[k];
          const double ref = round_out(acc * halpha[r] + bf2f(hbias[n]), false);
          double got = bf2f(tmp[i * ostride + n]);
          if (std::isnan(got)) got = 1e300;
          num += (got - ref) * (got - ref);
          den += ref * ref;
        }
      }
      const double err = std::sqrt(num / den);
      const bool ok = err <= 1e-3;
      if (!ok) g_fail++;
      printf("[ref]  N=%5d K=%5d inv=%d M=1 (rows alone, %zu sampled) rel_fro_err(vs rounded ref)=%.3e %s  (plan M=1: bt=%d kc=%d splits=%d split_out=%d)\n",
             N, K, inv, samp.size(), err, ok ? "OK" : "FAIL", plan1.bt, plan1.kc, plan1.splits, (int)plan1.split_out);
    }
    std::vector<int> Ms = {1, 2, 3, 4, 8, 16, 17, 32, 64, 65, 128, 129, 256, 257, 1000, 4096};
    if (quick) Ms = {1, 3, 16, 17, 65, 129, 257, 4096};
    int bad_rows_total = 0, nan_total = 0;
    std::string detail;
    for (int M : Ms) {
      for (int pass = 0; pass < 2; ++pass) {
        const int64_t off = pass == 0 ? 0 : Mmax - M;
        if (pass == 1 && off == 0) continue;
        fill_u16<<<1024, 256>>>(multi, (size_t)Mmax * ostride, 0x7FC1);
        CKN(run_gemm(c, P, act + (size_t)off * stride, stride, M, alpha + off, 1, bias, multi, NVFP4_DTYPE_BF16, ostride,
                     inv, 0));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(hm.data(), multi, (size_t)M * ostride * 2, cudaMemcpyDeviceToHost));
        int bad = 0, nans = 0;
        for (int r = 0; r < M; ++r) {
          for (int n = 0; n < N; ++n) {
            const uint16_t v = hm[(size_t)r * ostride + n];
            if ((v & 0x7F80) == 0x7F80 && (v & 0x7F)) ++nans;
          }
          if (memcmp(&hm[(size_t)r * ostride], &hs[(size_t)(off + r) * ostride], N * 2) != 0) ++bad;
        }
        if (bad || nans) {
          char buf[128];
          snprintf(buf, sizeof buf, " M=%d@%lld:%d rows differ,%d NaN;", M, (long long)off, bad, nans);
          detail += buf;
        }
        bad_rows_total += bad;
        nan_total += nans;
        if (M == 4096 && pass == 0) {
          // reference on sampled rows of the full batch
          double num = 0, den = 0;
          for (int r : samp) {
            for (int n = 0; n < N; ++n) {
              double acc = 0;
              const double* wr = &P.wdq[(size_t)n * K];
              const uint16_t* ar = &hact[(size_t)r * stride];
              for (int k = 0; k < K; ++k) acc += (double)bf2f(ar[k]) * wr[k];
              const double ref = round_out(acc * halpha[r] + bf2f(hbias[n]), false);
              double got = bf2f(hm[(size_t)r * ostride + n]);
              if (std::isnan(got)) got = 1e300;
              num += (got - ref) * (got - ref);
              den += ref * ref;
            }
          }
          const double err = std::sqrt(num / den);
          const bool ok = err <= 1e-3;
          if (!ok) g_fail++;
          printf("[ref]  N=%5d K=%5d inv=%d M=4096 (sampled rows) rel_fro_err=%.3e %s\n", N, K, inv, err, ok ? "OK" : "FAIL");
        }
      }
    }
    const bool ok = (bad_rows_total == 0 || !inv) && nan_total == 0;
    if (!ok) g_fail++;
    printf("[inv]  N=%5d K=%5d invariant=%d: %d rows differ from their M=1 result over M in {%s}; NaN outputs=%d %s%s\n",
           N, K, inv, bad_rows_total, quick ? "quick list" : "1..4096 list, 2 positions", nan_total,
           inv ? (ok ? "OK" : "FAIL") : "(fast mode: informational)", detail.c_str());
  }

  // Variant: fp16 output, scalar alpha, no bias, M=37 (fused/split per plan), compare against reference.
  {
    const int M = 37;
    fill_u16<<<1024, 256>>>(multi, (size_t)Mmax * ostride, 0x7E01);
    float* small_alpha;
    CK(cudaMalloc(&small_alpha, 4));
    const float sa = 1.0f / 1024.0f;  // keeps fp16 outputs in range (products reach 2688 * 16 * K)
    CK(cudaMemcpy(small_alpha, &sa, 4, cudaMemcpyHostToDevice));
    CKN(run_gemm(c, P, act, stride, M, small_alpha, 0, nullptr, multi, NVFP4_DTYPE_FP16, ostride, 1, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(hm.data(), multi, (size_t)M * ostride * 2, cudaMemcpyDeviceToHost));
    std::vector<float> save = halpha;
    for (int i = 0; i < Mmax; ++i) halpha[i] = sa;
    std::vector<int> rows;
    for (int r = 0; r < M; ++r) rows.push_back(r);
    const double err = ref_err(hm, 0, rows, true, false, false);
    halpha = save;
    cudaFree(small_alpha);
    const bool ok = err <= 1e-3;
    if (!ok) g_fail++;
    printf("[ref]  N=%5d K=%5d fp16 out, scalar alpha, no bias, M=37: rel_fro_err=%.3e %s\n", N, K, err, ok ? "OK" : "FAIL");
  }
  // Variant: large M fast mode (no chunking) on the reference too.
  {
    const int M = 300;
    fill_u16<<<1024, 256>>>(multi, (size_t)Mmax * ostride, 0x7FC1);
    CKN(run_gemm(c, P, act, stride, M, alpha, 1, bias, multi, NVFP4_DTYPE_BF16, ostride, 0, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(hm.data(), multi, (size_t)M * ostride * 2, cudaMemcpyDeviceToHost));
    std::vector<int> rows;
    for (int r = 0; r < M; r += 7) rows.push_back(r);
    rows.push_back(M - 1);
    const double err = ref_err(hm, 0, rows, false, true, true);
    const bool ok = err <= 1e-3;
    if (!ok) g_fail++;
    printf("[ref]  N=%5d K=%5d fast mode M=300: rel_fro_err=%.3e %s\n", N, K, err, ok ? "OK" : "FAIL");
  }
  cudaFree(act);
  cudaFree(alpha);
  cudaFree(bias);
  cudaFree(single);
  cudaFree(multi);
  P.release();
}

static void check_args() {
  // Every bad argument must return NVFP4_ERR_INVALID_ARGUMENT with a message; nothing may launch.
  uint8_t* d;
  CK(cudaMalloc(&d, 1 << 20));
  const void* act = d;
  const uint8_t* w = d;
  const uint8_t* s = d;
  const float* al = reinterpret_cast<const float*>(d);
  void* out = d + 4096;
  struct Case {
    const char* name;
    int rc;
  };
  std::vector<Case> cases;
  auto call = [&](const void* a, int64_t as, int64_t M, int64_t N, int64_t K, const uint8_t* ww, const uint8_t* ss,
                  const float* aa, void* o, int dt, int64_t os, int inv, void* ws, size_t wsb) {
    return nvfp4_sm90_gemm(a, as, M, N, K, ww, ss, aa, 0, nullptr, o, dt, os, inv, ws, wsb, nullptr);
  };
  cases.push_back({"K=8", call(act, 64, 1, 64, 8, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"K=24", call(act, 64, 1, 64, 24, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"M=0", call(act, 64, 0, 64, 64, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"N=0", call(act, 64, 1, 0, 64, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"act NULL", call(nullptr, 64, 1, 64, 64, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"w NULL", call(act, 64, 1, 64, 64, nullptr, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"scales NULL", call(act, 64, 1, 64, 64, w, nullptr, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"alpha NULL", call(act, 64, 1, 64, 64, w, s, nullptr, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"out NULL", call(act, 64, 1, 64, 64, w, s, al, nullptr, 0, 64, 1, nullptr, 0)});
  cases.push_back({"dtype 7", call(act, 64, 1, 64, 64, w, s, al, out, 7, 64, 1, nullptr, 0)});
  cases.push_back({"act misaligned", call(d + 2, 64, 1, 64, 64, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"act stride 68", call(act, 68, 1, 64, 64, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"act stride < K", call(act, 32, 1, 64, 64, w, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"w misaligned", call(act, 64, 1, 64, 64, d + 4, s, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"scales misaligned", call(act, 64, 1, 64, 64, w, d + 8, al, out, 0, 64, 1, nullptr, 0)});
  cases.push_back({"out misaligned", call(act, 64, 1, 64, 64, w, s, al, d + 4097, 0, 64, 1, nullptr, 0)});
  cases.push_back({"out stride < N", call(act, 64, 1, 64, 64, w, s, al, out, 0, 32, 1, nullptr, 0)});
  cases.push_back({"invariant 2", call(act, 64, 1, 64, 64, w, s, al, out, 0, 64, 2, nullptr, 0)});
  cases.push_back({"workspace too small", call(act, 4096, 1, 4096, 4096, w, s, al, out, 0, 4096, 1, nullptr, 0)});
  size_t b = 0;
  cases.push_back({"ws_size bytes NULL", nvfp4_sm90_gemm_workspace_size(1, 64, 64, 1, nullptr)});
  cases.push_back({"ws_size K=8", nvfp4_sm90_gemm_workspace_size(1, 64, 8, 1, &b)});
  for (auto& cs : cases) {
    const bool ok = cs.rc == NVFP4_ERR_INVALID_ARGUMENT;
    if (!ok) g_fail++;
    printf("[args] %-22s rc=%d %s  msg: %s\n", cs.name, cs.rc, ok ? "OK" : "FAIL", nvfp4_last_error());
  }
  CK(cudaDeviceSynchronize());
  cudaFree(d);
}

// ---------------------------------------------------------------- timing
struct Timer {
  cudaStream_t st;
  Timer() { CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking)); }
  // Captures `launches` calls of fn(i) into a graph; returns median microseconds per call over replays.
  template <class F>
  double time(F fn, int launches, int replays = 7) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < launches; ++i) fn(i, st);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaGraphLaunch(ge, st));
    CK(cudaStreamSynchronize(st));
    std::vector<double> ts;
    for (int r = 0; r < replays; ++r) {
      CK(cudaEventRecord(a, st));
      CK(cudaGraphLaunch(ge, st));
      CK(cudaEventRecord(b, st));
      CK(cudaEventSynchronize(b));
      float ms;
      CK(cudaEventElapsedTime(&ms, a, b));
      ts.push_back(ms * 1000.0 / launches);
    }
    std::sort(ts.begin(), ts.end());
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ts[ts.size() / 2];
  }
};

static void bench(bool quick) {
  const int shapes[][2] = {{4096, 4096}, {6144, 4096}, {4096, 14336}, {8192, 8192}, {10240, 8192},
                           {28672, 4096}, {8192, 28672}, {57344, 8192}};
  std::vector<int> Ms = {1, 4, 16, 64, 256, 1024, 4096, 8192};
  if (quick) Ms = {1, 16, 8192};
  if (g_decode_only) Ms = {1, 16};
  if (g_prefill_only) Ms = {256, 8192};
#ifndef NO_CUBLAS
  cublasHandle_t h;
  cublasCreate(&h);
#endif
  Ctx c;
  Timer T;
  const int64_t maxM = 8192;
  void* out;
  CK(cudaMalloc(&out, (size_t)maxM * 57344 * 2));
  __nv_bfloat16* act;
  CK(cudaMalloc(&act, (size_t)maxM * 28672 * 2));
  gen_act<<<4096, 256>>>(act, maxM, 28672, 28672, 7);  // reused with smaller K: rows strided by K below
  float* alpha;
  CK(cudaMalloc(&alpha, maxM * 4));
  {
    std::vector<float> ha(maxM, 1.0f);
    CK(cudaMemcpy(alpha, ha.data(), maxM * 4, cudaMemcpyHostToDevice));
  }
  printf("\n[bench] CUDA-graph replay, weights rotated over copies >= 160 MB total (L2 is 50 MB), median of 7 replays\n");
  printf("[bench] %-12s %5s | %9s %9s %6s | %9s %8s %8s | %9s %8s | %7s %7s\n", "NxK", "M", "inv_us", "fast_us",
         "inv/f", "cublas_us", "inv_TF", "cub_TF", "floor_us", "floor%", "x_cub", "plan");
  for (auto& sh : shapes) {
    const int N = sh[0], K = sh[1];
    if (g_prefill_only && !((N == 4096 && K == 4096) || (N == 8192 && K == 8192) || (N == 28672 && K == 4096))) continue;
    Problem base;
    base.alloc(N, K, 77);
    const int R = static_cast<int>(std::min<size_t>(24, std::max<size_t>(2, (160u << 20) / (base.wbytes + base.sbytes) + 1)));
    std::vector<uint8_t*> ws(R), ss(R);
    ws[0] = base.w;
    ss[0] = base.s;
    for (int r = 1; r < R; ++r) {
      CK(cudaMalloc(&ws[r], base.wbytes));
      CK(cudaMalloc(&ss[r], base.sbytes));
      CK(cudaMemcpy(ws[r], base.w, base.wbytes, cudaMemcpyDeviceToDevice));
      CK(cudaMemcpy(ss[r], base.s, base.sbytes, cudaMemcpyDeviceToDevice));
    }
    // bf16 weights for cuBLAS
    const size_t bfb = (size_t)N * K * 2;
    const int RB = static_cast<int>(std::min<size_t>(8, std::max<size_t>(2, (160u << 20) / bfb + 1)));
    std::vector<__nv_bfloat16*> wb(RB);
    for (int r = 0; r < RB; ++r) {
      CK(cudaMalloc(&wb[r], bfb));
      dequant_bf16<<<4096, 256>>>(ws[0], ss[0], wb[r], N, K);
    }
    CK(cudaDeviceSynchronize());
    const double floor_us = (double)N * K * 0.5625 / 3.07e12 * 1e6;
    for (int M : Ms) {
      size_t need0 = 0, need1 = 0;
      CKN(nvfp4_sm90_gemm_workspace_size(M, N, K, 0, &need0));
      CKN(nvfp4_sm90_gemm_workspace_size(M, N, K, 1, &need1));
      c.ensure(std::max(need0, need1));
      const double flops = 2.0 * M * N * K;
      // launches per replay: ~>= 300 us of work
      const double est_us = std::max(floor_us, flops / 600e12 * 1e6);
      const int L = std::max(1, std::min(20, static_cast<int>(300.0 / est_us) + 1));
      double t[2];
      for (int inv = 0; inv < 2; ++inv) {
        auto fn = [&](int i, cudaStream_t st) {
          const int r = i % R;
          int rc = nvfp4_sm90_gemm(act, K, M, N, K, ws[r], ss[r], alpha, 1, nullptr, out, NVFP4_DTYPE_BF16, N, inv,
                                   c.ws, c.ws_bytes, st);
          if (rc != NVFP4_OK) {
            fprintf(stderr, "gemm failed: %s\n", nvfp4_last_error());
            exit(1);
          }
        };
        t[inv] = T.time(fn, L);
      }
      double tc = -1;
#ifndef NO_CUBLAS
      if (M == 1 || M == 16 || M >= 4096 || !quick) {
        cublasSetStream(h, T.st);
        auto fc = [&](int i, cudaStream_t st) {
          const float one = 1.0f, zero = 0.0f;
          cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, wb[i % RB], CUDA_R_16BF, K, act,
                                          CUDA_R_16BF, K, &zero, out, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT);
          if (s != CUBLAS_STATUS_SUCCESS) {
            fprintf(stderr, "cublas failed %d\n", (int)s);
            exit(1);
          }
        };
        tc = T.time(fc, L);
      }
#endif
      const auto plan = nvfp4::sm90::make_plan(M, N, K, 1, 132);
      char pl[64];
      snprintf(pl, sizeof pl, "bt%d kc%d s%d%s", plan.bt, plan.kc, plan.splits, plan.split_out ? "x" : "");
      char shp[32];
      snprintf(shp, sizeof shp, "%dx%d", N, K);
      printf("[bench] %-12s %5d | %9.2f %9.2f %6.3f | %9.2f %8.1f %8.1f | %9.2f %7.1f%% | %7.2f  %s\n", shp, M, t[1],
             t[0], t[1] / t[0], tc, flops / t[1] * 1e-6, tc > 0 ? flops / tc * 1e-6 : 0.0, floor_us,
             100.0 * floor_us / t[1], tc > 0 ? tc / t[1] : 0.0, pl);
      fflush(stdout);
    }
    for (int r = 1; r < R; ++r) {
      cudaFree(ws[r]);
      cudaFree(ss[r]);
    }
    for (auto p : wb) cudaFree(p);
    base.release();
  }
#ifndef NO_CUBLAS
  cublasDestroy(h);
#endif
  cudaFree(out);
  cudaFree(act);
  cudaFree(alpha);
}

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "all";
  const bool quick = argc > 2 && std::string(argv[2]) == "quick";
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  if (mode == "check" || mode == "all") {
    check_args();
    Ctx c;
    const int shapes[][2] = {{160, 2048}, {352, 1984}, {320, 1008}, {4096, 4096}, {8192, 8192}, {28672, 4096}};
    const int ns = quick ? 3 : 6;
    for (int i = 0; i < ns; ++i) check_shape(c, shapes[i][0], shapes[i][1], quick);
    printf("[check] failures: %d\n", g_fail);
  }
  if (mode == "small") {  // one small call for compute-sanitizer
    Ctx c;
    Problem P;
    P.alloc(160, 2048, 5);
    for (int M : {1, 3, 70}) {
      __nv_bfloat16* act;
      CK(cudaMalloc(&act, (size_t)M * 2048 * 2));
      gen_act<<<64, 256>>>(act, M, 2048, 2048, 3);
      float* alpha;
      CK(cudaMalloc(&alpha, M * 4));
      CK(cudaMemset(alpha, 0, M * 4));
      void* out;
      CK(cudaMalloc(&out, (size_t)M * 160 * 2));
      for (int inv = 0; inv < 2; ++inv)
        CKN(run_gemm(c, P, act, 2048, M, alpha, 1, nullptr, out, NVFP4_DTYPE_BF16, 160, inv, 0));
      CK(cudaDeviceSynchronize());
      cudaFree(act);
      cudaFree(alpha);
      cudaFree(out);
    }
    printf("[small] done\n");
  }
  if (mode == "prefill") {
    g_prefill_only = true;
    bench(true);
  }
  if (mode == "decode") {
    g_decode_only = true;
    bench(true);
  }
  if (mode == "one") {  // for ncu: harness one N K M inv
    const int N = atoi(argv[2]), K = atoi(argv[3]), M = atoi(argv[4]), inv = atoi(argv[5]);
    Ctx c;
    Problem P;
    P.alloc(N, K, 5);
    __nv_bfloat16* act;
    CK(cudaMalloc(&act, (size_t)M * K * 2));
    gen_act<<<256, 256>>>(act, M, K, K, 3);
    float* alpha;
    CK(cudaMalloc(&alpha, M * 4));
    CK(cudaMemset(alpha, 0, M * 4));
    void* out;
    CK(cudaMalloc(&out, (size_t)M * N * 2));
    for (int i = 0; i < 3; ++i) CKN(run_gemm(c, P, act, K, M, alpha, 1, nullptr, out, NVFP4_DTYPE_BF16, N, inv, 0));
    CK(cudaDeviceSynchronize());
    printf("[one] done\n");
  }
  if (mode == "bench" || mode == "all") bench(quick);
  return g_fail ? 1 : 0;
}
