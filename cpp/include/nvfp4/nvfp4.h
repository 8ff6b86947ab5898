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

#define NVFP4_ABI_VERSION 4

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
//                 or the per-token one), times *row_scale_multiplier when that is not NULL (pass the weight's
//                 global scale to get the GEMM's per-row alpha in the same launch). May be NULL only with a static
//                 scale.
//   row_scale_multiplier: device fp32 scalar or NULL.
//   packed_out:   [rows, cols/2] uint8 or NULL.
//   scales_out:   swizzled e4m3 bytes, round_up(rows,128) * round_up(cols/16,4) bytes, or NULL; the padding is
//                 written with zeros.
//   dequant_out:  [rows, cols] bf16, exact e2m1*block_scale (no global scale) or NULL.
// Each row is processed by the same threads in the same order whatever `rows` is (batch invariant).
NVFP4_API int nvfp4_quantize_activations(const void* x, int x_dtype, int64_t rows, int64_t cols,
                                         int64_t x_row_stride, const float* static_global_scale,
                                         float* row_global_scale_out, const float* row_scale_multiplier,
                                         uint8_t* packed_out, uint8_t* scales_out, void* dequant_out, void* stream);

// Batch-invariant RMSNorm, the HF Llama formula out = w * (x * 1/sqrt(mean(x^2) + eps)).to(dtype), in a fixed order
// (python/nvfp4/invariant_norm.py is the specification; nvfp4.InvariantRMSNorm uses it). torch's own reduction picks
// its block shape from the number of rows, so a row's bits could depend on the batch; here every row is a pure
// function of itself (and w, eps), and equals the torch reference bit for bit:
//   1. sq[i] = fp32(x[i]) * fp32(x[i]) (IEEE-rounded, no FMA).
//   2. Pad sq with +0 to P = next power of two >= cols; while L > 1: sq[i] = sq[i] + sq[i + L/2] for i < L/2,
//      L /= 2 ("fold halves"). total = sq[0].
//   3. var = total / float(cols); r = 1 / sqrt(var + eps) with IEEE division and square root (not rsqrt).
//   4. y = round_to_dtype(fp32(x) * r); out = round_to_dtype(fp32(w) * fp32(y)); NaN outputs are canonical
//      (bf16 0x7FC0, fp16 0x7E00).
//   x:       [rows, cols] bf16 or fp16 (`dtype`), row stride `x_row_stride` (>= cols), unit stride along cols.
//   weight:  [cols] in the same dtype, contiguous.
//   out:     [rows, cols] same dtype, contiguous.
//   cols:    1..65536. eps: finite, >= 0 (an fp32 value: pass fp32(eps)). rows == 0 is a no-op (pointers unused).
NVFP4_API int nvfp4_rms_norm(const void* x, int dtype, int64_t rows, int64_t cols, int64_t x_row_stride,
                             const void* weight, float eps, void* out, void* stream);

// The K-chunk rule (python/nvfp4/chunking.py): the chunk length that fixes every invariant output's reduction order
// for an N x K layer, from (N, K) alone. Host only; exists in every build.
NVFP4_API int nvfp4_chunk_k(int64_t N, int64_t K, int64_t* chunk_k);

// ==== Hopper (sm_90a: compute capability 9.0 only) ===============================================================
// The NVFP4 linear layer:  out[m, n] = alpha_m * sum_k a[m, k] * (w[n, k] * w_scale[n, k/16]) + bias[n]
//   w_prepacked: the Hopper runtime layout of the weights and block scales (cpp/kernels/sm90/layout.h; made by
//                python/nvfp4/backends/sm90.py), nvfp4_sm90_prepacked_bytes(N, K) bytes, 16-byte aligned.
//   x:           [M, K] activations, row stride x_row_stride (multiple of 8 elements), 16-byte aligned, dtype x_dtype;
//                out has the same dtype.
//   act:         NVFP4_SM90_ACT_BF16: x (bf16) is the operand a as is (W4A16 activations, or exact dequantized NVFP4
//                activations), alpha holds 1 value or M values (alpha_per_row).
//                NVFP4_SM90_ACT_QUANT_PER_TOKEN / _QUANT_STATIC: x (bf16 or fp16) is quantized per row by the
//                activation recipe (nvfp4_quantize_activations' bytes) with per-token or *static_scale decode scales;
//                a = the exact dequantized values, alpha_m = row decode scale * alpha[0] (the weight's global scale,
//                alpha_per_row = 0). The standalone quantizer writes them into the workspace first (up to 16 rows
//                can be quantized inside the GEMM instead: nvfp4_sm90_set_fused(1)); the bytes are the same.
//   bias:        [N] in x_dtype or NULL. out: [M, N], row stride out_row_stride.
//   invariant:   1 = every output's K reduction order is a function of (N, K) only: K in chunks of
//                nvfp4_chunk_k(N, K), each chunk's sum from zero, chunk sums added in order to zero.
//   chunk_k:     0 = the rule above; else a multiple of 256 to use instead (a row-parallel shard of a larger layer
//                uses the whole layer's chunk).
//   chunk_partials: NULL, or fp32 [nchunks][M][N] that receives every chunk's sum (no alpha, bias or rounding)
//                instead of out: the pieces a tensor-parallel reduction adds in chunk order.
//   workspace:   nvfp4_sm90_linear_workspace_size(...) bytes, 256-byte aligned (NULL when 0).
// The plan (token tile, chunk, how a tile's chunks are spread over CTAs and added, fused quantizer) depends on M and
// the device for speed; the bits do not. nvfp4_sm90_linear_plan reports it for the current device.
#define NVFP4_SM90_ACT_BF16 0
#define NVFP4_SM90_ACT_QUANT_PER_TOKEN 1
#define NVFP4_SM90_ACT_QUANT_STATIC 2
#define NVFP4_SM90_REDUCE_NONE 0
#define NVFP4_SM90_REDUCE_CLUSTER 1
#define NVFP4_SM90_REDUCE_KERNEL 2
NVFP4_API int nvfp4_sm90_prepacked_bytes(int64_t N, int64_t K, size_t* bytes);
NVFP4_API int nvfp4_sm90_linear_workspace_size(int64_t M, int64_t N, int64_t K, int act, int invariant,
                                               int64_t chunk_k, int partials_out, size_t* bytes);
NVFP4_API int nvfp4_sm90_linear_plan(int64_t M, int64_t N, int64_t K, int act, int invariant, int64_t chunk_k,
                                     int* token_tile, int* chunk_k_out, int* nchunks, int* splits, int* reduce,
                                     int* fused);
NVFP4_API int nvfp4_sm90_linear(const void* x, int x_dtype, int64_t x_row_stride, int act, const float* static_scale,
                                const float* alpha, int alpha_per_row, int64_t M, int64_t N, int64_t K,
                                const uint8_t* w_prepacked, const void* bias, void* out, int64_t out_row_stride,
                                int invariant, int64_t chunk_k, float* chunk_partials, void* workspace,
                                size_t workspace_bytes, void* stream);
// CTAs per SM of the token_tile kernel, and how many clusters of cluster_size (1..16) of them the current device holds
// at once (0: it cannot schedule one).
NVFP4_API int nvfp4_sm90_occupancy(int token_tile, int cluster_size, int* ctas_per_sm, int* max_clusters);
// Switches for tests and benchmarks, for later calls in this process; none changes a bit.
//   set_split_reduce: 0 = automatic, NVFP4_SM90_REDUCE_CLUSTER or _KERNEL for calls that split their chunks
//                     (forcing CLUSTER fails where the device cannot schedule it).
//   set_fused:        0 = automatic, 1 = quantize inside the GEMM wherever that kernel serves, 2 = never.
//   set_sm_count:     0 = the device's, else plan as if the GPU had this many SMs.
//   set_pdl:          1 = a GEMM that follows the standalone activation quantizer in one call is launched as its
//                     programmatic dependent (PDL): it copies its first weights while the quantizer runs. 0 (default).
NVFP4_API int nvfp4_sm90_set_split_reduce(int mode);
NVFP4_API int nvfp4_sm90_set_fused(int mode);
NVFP4_API int nvfp4_sm90_set_sm_count(int sms);
NVFP4_API int nvfp4_sm90_set_pdl(int on);

// The grouped layer (mixture-of-experts): num_experts (1..4096) experts of one N x K projection in one launch.
//   x:              [rows, K] sorted by expert: rows expert_offsets[e] .. expert_offsets[e+1] - 1 go through expert e.
//   expert_offsets: device int64 [num_experts + 1], non-decreasing from 0 to rows. Values are clamped to [0, rows], so
//                   no value makes a kernel access memory out of bounds; rows of decreasing offsets get unspecified
//                   values, rows outside [expert_offsets[0], expert_offsets[num_experts]) are not written.
//   w_prepacked:    the experts' runtime layouts one after another (num_experts x nvfp4_sm90_prepacked_bytes(N, K)).
//   alphas:         [num_experts] the experts' weight global scales (alpha of nvfp4_sm90_linear, one per expert).
//   static_scales:  [num_experts] with NVFP4_SM90_ACT_QUANT_STATIC (expert e's rows use static_scales[e]), else NULL.
//   act, x_dtype, out, out_row_stride: as nvfp4_sm90_linear (no bias).
// Every row gets the bits of an invariant nvfp4_sm90_linear call of its expert (the chunk rule of (N, K)), whatever
// the other rows and their experts. workspace: nvfp4_sm90_grouped_workspace_size(...) bytes, 256-byte aligned.
// nvfp4_sm90_grouped_plan reports the token tile, the chunk length, the token tiles launched per 128-row weight tile
// and whether the activations are quantized inside the GEMM.
NVFP4_API int nvfp4_sm90_grouped_plan(int64_t rows, int num_experts, int64_t N, int64_t K, int act, int* token_tile,
                                      int* chunk_k_out, int64_t* slots, int* fused);
NVFP4_API int nvfp4_sm90_grouped_workspace_size(int64_t rows, int num_experts, int64_t N, int64_t K, int act,
                                                size_t* bytes);
NVFP4_API int nvfp4_sm90_grouped_linear(const void* x, int x_dtype, int64_t x_row_stride, int act,
                                        const float* static_scales, const float* alphas, int64_t rows,
                                        int num_experts, const int64_t* expert_offsets, int64_t N, int64_t K,
                                        const uint8_t* w_prepacked, void* out, int64_t out_row_stride,
                                        void* workspace, size_t workspace_bytes, void* stream);

// ==== Blackwell ==================================================================================================
// SM100 (sm_100a: B200/GB200, compute capability 10.0 only) and SM120 (sm_120a: RTX 50 / RTX PRO, 12.0 only)
// NVFP4 x NVFP4 GEMMs on CUTLASS block-scaled tensor cores (docs/blackwell.md). XX below is 100 or 120; a function
// exists only when the library was built for that arch.
//   out[m, n] = alpha[m] * sum_k (act[m, k] * act_scale[m, k/16]) * (w[n, k] * w_scale[n, k/16]) + bias[n]
//   act_packed: [M, K/2] uint8 contiguous (e2m1 pairs); act_scales: swizzled e4m3 for M rows and K/16 groups.
//   w_packed:   [N, K/2] uint8 contiguous;               w_scales:   swizzled e4m3 for N rows and K/16 groups.
//   K a multiple of the family's tile K (256 on SM100, 128 on SM120: no tile reads past the buffers) and N % 8 == 0
//   (16-byte rows for the TMA store): pad with zero data and zero scales. alpha: device fp32, 1 value (alpha_per_row == 0) or M values (per-token scale * weight_scale_2).
//   bias: [N] in out_dtype or NULL. out: [M, N] row stride out_row_stride (>= N, multiple of 8). Every pointer
//   16-byte aligned (alpha: 4). invariant: 1 = configuration from (N, K) only; 0 = chosen by M too.
//   workspace: nvfp4_smXX_gemm_workspace_size bytes (may be NULL when 0).
// Configuration queries (host only, no device needed):
//   nvfp4_smXX_num_configs / nvfp4_smXX_config_info(index, name, cap): the compiled configuration table.
//   nvfp4_smXX_select_config / nvfp4_smXX_config_name: the configuration the GEMM would run for (M, N, K, mode);
//     config_name returns the name length (or minus the status on invalid arguments) and writes it into buf.
//   nvfp4_smXX_host_check: CUTLASS can_implement and get_workspace_size of configuration `index` for (M, N, K) with
//     hw_info.sm_count = sm_count (no CUDA call), and whether the SFA/SFB layouts handed to CUTLASS give the 128x4
//     offsets above for every (row, group) checked.
NVFP4_API int nvfp4_sm100_num_configs(void);
NVFP4_API int nvfp4_sm100_config_info(int index, char* name, size_t capacity);
NVFP4_API int nvfp4_sm100_select_config(int64_t M, int64_t N, int64_t K, int invariant, int* index);
NVFP4_API int nvfp4_sm100_config_name(int64_t M, int64_t N, int64_t K, int invariant, char* buf, size_t capacity);
NVFP4_API int nvfp4_sm100_host_check(int index, int64_t M, int64_t N, int64_t K, int out_dtype, int sm_count,
                                     int* can_implement, size_t* workspace_bytes, int* layout_ok);
NVFP4_API int nvfp4_sm100_gemm_workspace_size(int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes);
NVFP4_API int nvfp4_sm100_gemm(const uint8_t* act_packed, const uint8_t* act_scales, int64_t M, int64_t N, int64_t K,
                               const uint8_t* w_packed, const uint8_t* w_scales, const float* alpha, int alpha_per_row,
                               const void* bias, void* out, int out_dtype, int64_t out_row_stride, int invariant,
                               void* workspace, size_t workspace_bytes, void* stream);

NVFP4_API int nvfp4_sm120_num_configs(void);
NVFP4_API int nvfp4_sm120_config_info(int index, char* name, size_t capacity);
NVFP4_API int nvfp4_sm120_select_config(int64_t M, int64_t N, int64_t K, int invariant, int* index);
NVFP4_API int nvfp4_sm120_config_name(int64_t M, int64_t N, int64_t K, int invariant, char* buf, size_t capacity);
NVFP4_API int nvfp4_sm120_host_check(int index, int64_t M, int64_t N, int64_t K, int out_dtype, int sm_count,
                                     int* can_implement, size_t* workspace_bytes, int* layout_ok);
NVFP4_API int nvfp4_sm120_gemm_workspace_size(int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes);
NVFP4_API int nvfp4_sm120_gemm(const uint8_t* act_packed, const uint8_t* act_scales, int64_t M, int64_t N, int64_t K,
                               const uint8_t* w_packed, const uint8_t* w_scales, const float* alpha, int alpha_per_row,
                               const void* bias, void* out, int out_dtype, int64_t out_row_stride, int invariant,
                               void* workspace, size_t workspace_bytes, void* stream);
// ==== end Blackwell ==============================================================================================

#ifdef __cplusplus
}
#endif
