// Shared CUTLASS plumbing of the Blackwell (SM100 and SM120) NVFP4 GEMM configurations: the epilogue (EVT), the
// argument construction, the host-only check and the launch. Included only by the per-configuration TUs.
//
// Epilogue: D[m, n] = cvt_rn(fma(alpha[m], acc[m, n], bias[n])), in fp32, as an epilogue visitor tree:
//   Sm90Compute<homogeneous_multiply_add>( Sm90ColBroadcast(alpha), Sm90AccFetch, Sm90RowBroadcast(bias) )
// CUTLASS has no tagged fusion op for "per-row scale + per-column bias" (LinCombPerRowBias has a scalar alpha and a
// per-row bias; PerColLinCombPerColBiasEltAct has both per column), so the tree is spelled out here. The alpha
// node uses a *dynamic* broadcast stride (Stride<bool,_0,_0>): dCol = {true,...} reads alpha[m] (per-token
// activation scale times weight_scale_2), {false,...} reads alpha[0] for every row (static activation scale). One
// compiled epilogue serves both. The alpha loads are scalar (alignment 1) so every element load is predicated on
// m < M (a 4-wide vector load could read past an M-element buffer). The bias node has EnableNullptr: bias == NULL
// gives 0. No source (C) operand is read.
#pragma once
#include <cuda_runtime.h>

#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/sm100_blockscaled_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_load_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "blockscaled_common.h"
#include "nvfp4/nvfp4.h"
#include "status.h"

namespace nvfp4 {
namespace blackwell {

using ElementPairNvf4 = cutlass::nv_float4_t<cutlass::float_e2m1_t>;  // e2m1 data + e4m3 scale per 16
using LayoutA = cutlass::layout::RowMajor;     // activations [M, K], K-major
using LayoutB = cutlass::layout::ColumnMajor;  // weights [N, K], K-major (B is K x N column-major)
using LayoutD = cutlass::layout::RowMajor;     // out [M, N]
constexpr int kAlignmentAB = 32;               // elements: 16 bytes of e2m1, the TMA minimum (K % 32 == 0)
using ElementAccumulator = float;
using ElementCompute = float;

// The SF layout every configuration must use: the 128x4 atom of docs/format.md.
using ScaleConfig = cutlass::detail::Sm1xxBlockScaledConfig<16>;

template <class CtaTileShapeMNK, class ElementD>
using AlphaRowBiasColEVT = cutlass::epilogue::fusion::Sm90EVT<
    cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, ElementD, ElementCompute,
                                           cutlass::FloatRoundStyle::round_to_nearest>,
    cutlass::epilogue::fusion::Sm90ColBroadcast<0, CtaTileShapeMNK, float, ElementCompute,
                                                cute::Stride<bool, cute::_0, cute::_0>, /*Alignment=*/1,
                                                /*EnableNullptr=*/false>,
    cutlass::epilogue::fusion::Sm90AccFetch,
    cutlass::epilogue::fusion::Sm90RowBroadcast<0, CtaTileShapeMNK, ElementD, ElementCompute,
                                                cute::Stride<cute::_0, cute::_1, cute::_0>,
                                                /*Alignment=*/128 / cutlass::sizeof_bits<ElementD>::value,
                                                /*EnableNullptr=*/true>>;

// Batch invariance guard: every output tile is computed by exactly one CTA (or one 2-CTA pair) that walks all of K
// in order. Stream-K / split-K schedulers (whose decomposition depends on the tile count, i.e. on M) are excluded
// at compile time.
template <class GemmKernel>
constexpr bool is_data_parallel_scheduler() {
  using Tag = typename GemmKernel::TileSchedulerTag;
  return std::is_void_v<Tag> || std::is_same_v<Tag, cutlass::gemm::PersistentScheduler>;
}

template <class Gemm>
struct Runner {
  using GemmKernel = typename Gemm::GemmKernel;
  using Mainloop = typename GemmKernel::CollectiveMainloop;
  using Arguments = typename Gemm::Arguments;
  using StrideA = typename GemmKernel::StrideA;
  using StrideB = typename GemmKernel::StrideB;
  using StrideC = typename GemmKernel::StrideC;
  using StrideD = typename GemmKernel::StrideD;

  static_assert(is_data_parallel_scheduler<GemmKernel>(),
                "Blackwell NVFP4 configs must use the persistent data-parallel tile scheduler (no stream-K/split-K)");
  static_assert(std::is_same_v<typename Mainloop::Sm1xxBlkScaledConfig, ScaleConfig>,
                "the kernel's scale-factor layout must be the 128x4 atom layout (Sm1xxBlockScaledConfig<16>)");

  static Arguments make_arguments(const GemmArgs& a) {
    const int M = static_cast<int>(a.M), N = static_cast<int>(a.N), K = static_cast<int>(a.K);
    auto problem = cute::make_shape(M, N, K, 1);
    Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = problem;
    auto& ml = args.mainloop;
    ml.ptr_A = reinterpret_cast<decltype(ml.ptr_A)>(a.a_packed);
    ml.dA = cutlass::make_cute_packed_stride(StrideA{}, cute::make_shape(M, K, 1));
    ml.ptr_B = reinterpret_cast<decltype(ml.ptr_B)>(a.b_packed);
    ml.dB = cutlass::make_cute_packed_stride(StrideB{}, cute::make_shape(N, K, 1));
    ml.ptr_SFA = reinterpret_cast<decltype(ml.ptr_SFA)>(a.a_scales);
    ml.layout_SFA = ScaleConfig::tile_atom_to_shape_SFA(problem);
    ml.ptr_SFB = reinterpret_cast<decltype(ml.ptr_SFB)>(a.b_scales);
    ml.layout_SFB = ScaleConfig::tile_atom_to_shape_SFB(problem);
    auto& ep = args.epilogue;
    ep.ptr_C = nullptr;
    ep.dC = cutlass::make_cute_packed_stride(StrideC{}, cute::make_shape(M, N, 1));
    ep.ptr_D = reinterpret_cast<decltype(ep.ptr_D)>(a.out);
    ep.dD = cutlass::make_cute_packed_stride(StrideD{}, cute::make_shape(M, N, 1));
    cute::get<0>(ep.dD) = a.out_row_stride;  // row stride of D (elements); unit stride along N
    // EVT arguments: {alpha (col broadcast), acc, bias (row broadcast), multiply_add}
    auto& fusion = ep.thread;
    using ElementBias = std::remove_const_t<std::remove_pointer_t<decltype(fusion.op_2.ptr_row)>>;
    fusion.op_0.ptr_col = a.alpha;
    fusion.op_0.dCol = cute::Stride<bool, cute::_0, cute::_0>{a.alpha_per_row != 0, {}, {}};
    fusion.op_2.ptr_row = reinterpret_cast<const ElementBias*>(a.bias);
    fusion.op_2.null_default = ElementBias(0);
    args.hw_info.device_id = a.device_id;
    args.hw_info.sm_count = a.sm_count;  // explicit: CUTLASS must not query the device
    return args;
  }

  // Host only: can_implement (alignment, SFA/SFB layouts equal CUTLASS's reference layouts, epilogue), workspace
  // size, and the scale layouts against the 128x4 formula. No CUDA runtime or driver call is made.
  static int check(const GemmArgs& a, HostCheck* out) {
    Arguments args = make_arguments(a);
    out->can_implement = Gemm::can_implement(args) == cutlass::Status::kSuccess;
    out->workspace_bytes = Gemm::get_workspace_size(args);
    const auto& ml = args.mainloop;
    out->sfa_cosize = static_cast<int64_t>(cute::cosize(ml.layout_SFA));
    out->sfb_cosize = static_cast<int64_t>(cute::cosize(ml.layout_SFB));
    // Offsets of the scales the kernel reads for (row, group) against the formula the Python swizzle implements;
    // every row/group for small problems, else an even sample that always includes the last row and group.
    const int64_t groups = a.K / 16;
    bool same = out->sfa_cosize == swizzled_bytes(a.M, groups) && out->sfb_cosize == swizzled_bytes(a.N, groups);
    auto step_of = [](int64_t n, int64_t all) { return n <= all ? int64_t(1) : n / all + 1; };
    auto next = [](int64_t i, int64_t step, int64_t n) { return (i + 1 == n) ? n : (i + step < n ? i + step : n - 1); };
    const int64_t gstep = step_of(groups, 256);
    for (int64_t r = 0, rs = step_of(a.M, 512); same && r < a.M; r = next(r, rs, a.M))
      for (int64_t g = 0; same && g < groups; g = next(g, gstep, groups))
        same = int64_t(ml.layout_SFA(int(r), int(g * 16), 0)) == swizzled_offset(r, g, groups);
    for (int64_t r = 0, rs = step_of(a.N, 512); same && r < a.N; r = next(r, rs, a.N))
      for (int64_t g = 0; same && g < groups; g = next(g, gstep, groups))
        same = int64_t(ml.layout_SFB(int(r), int(g * 16), 0)) == swizzled_offset(r, g, groups);
    out->layout_matches_python = same;
    return NVFP4_OK;
  }

  static int run(const GemmArgs& a, const char* name) {
    Arguments args = make_arguments(a);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
      return fail(NVFP4_ERR_UNSUPPORTED, "%s: CUTLASS cannot implement M=%lld N=%lld K=%lld (alignment: K %% 32 == 0, "
                  "N %% 8 == 0, out row stride %% 8 == 0)", name, (long long)a.M, (long long)a.N, (long long)a.K);
    }
    const size_t need = Gemm::get_workspace_size(args);
    NVFP4_REQUIRE(need <= a.workspace_bytes, "%s: workspace of %zu bytes given, %zu needed", name, a.workspace_bytes, need);
    auto stream = static_cast<cudaStream_t>(a.stream);
    cutlass::Status st = gemm.initialize(args, a.workspace, stream);
    if (st != cutlass::Status::kSuccess) {
      int rc = check_cuda(cudaGetLastError(), name);
      return rc != NVFP4_OK ? rc : fail(NVFP4_ERR_CUDA, "%s: CUTLASS initialize failed: %s", name, cutlassGetStatusString(st));
    }
    st = gemm.run(stream);
    if (st != cutlass::Status::kSuccess) {
      int rc = check_cuda(cudaGetLastError(), name);
      return rc != NVFP4_OK ? rc : fail(NVFP4_ERR_CUDA, "%s: CUTLASS run failed: %s", name, cutlassGetStatusString(st));
    }
    return check_cuda(cudaGetLastError(), name);
  }
};

// The CUTLASS type composition of one configuration, shared by SM100 and SM120: the builders of the epilogue (our
// EVT over the per-CTA tile) and of the block-scaled mainloop, the persistent kernel and its device adapter.
// ArchTag is cutlass::arch::Sm100 or Sm120; CtaTileShape is MmaTileShape except for 2SM MMAs (half of M per CTA).
template <class ArchTag, class MmaTileShape, class CtaTileShape, class ClusterShape, class MainloopSchedule,
          class EpilogueSchedule, class ElementD>
struct BlockScaledNvf4Gemm {
  static constexpr int kAlignmentD = 128 / cutlass::sizeof_bits<ElementD>::value;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      ArchTag, cutlass::arch::OpClassBlockScaledTensorOp, MmaTileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, ElementCompute,
      void, LayoutD, kAlignmentD, ElementD, LayoutD, kAlignmentD, EpilogueSchedule,
      AlphaRowBiasColEVT<CtaTileShape, ElementD>>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      ArchTag, cutlass::arch::OpClassBlockScaledTensorOp, ElementPairNvf4, LayoutA, kAlignmentAB,
      ElementPairNvf4, LayoutB, kAlignmentAB, ElementAccumulator, MmaTileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                          CollectiveEpilogue, cutlass::gemm::PersistentScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

}  // namespace blackwell
}  // namespace nvfp4

// Defines NS::run_<NAME> and NS::check_<NAME> (bf16 and fp16 output) of one configuration, given NS::NAME##_gemm,
// a template over the output element that names the configuration's Gemm (gemm_sm100.cuh, gemm_sm120.cuh).
#define NVFP4_BLACKWELL_DEFINE_RUNNERS(NS, NAME, CONFIG_ID)                                                       \
  namespace nvfp4 {                                                                                               \
  namespace NS {                                                                                                  \
  int run_##NAME(const GemmArgs& a) {                                                                             \
    if (a.out_dtype == NVFP4_DTYPE_FP16) return Runner<NAME##_gemm<cutlass::half_t>>::run(a, config_name(CONFIG_ID)); \
    return Runner<NAME##_gemm<cutlass::bfloat16_t>>::run(a, config_name(CONFIG_ID));                              \
  }                                                                                                               \
  int check_##NAME(const GemmArgs& a, HostCheck* out) {                                                          \
    if (a.out_dtype == NVFP4_DTYPE_FP16) return Runner<NAME##_gemm<cutlass::half_t>>::check(a, out);             \
    return Runner<NAME##_gemm<cutlass::bfloat16_t>>::check(a, out);                                               \
  }                                                                                                               \
  }                                                                                                               \
  }
