// CUTLASS 3.x (4.2) type composition of one SM100 NVFP4 configuration. Included by one TU per configuration.
#pragma once
#include "blockscaled_common.h"
#include "blockscaled_runner.cuh"
#include "config.h"

namespace nvfp4 {
namespace sm100 {

using namespace nvfp4::blackwell;

template <class MmaTileShape, class ClusterShape, class MainloopSchedule, class EpilogueSchedule, class ElementD>
struct Sm100Nvf4Gemm {
  static constexpr bool k2Sm = std::is_same_v<MainloopSchedule, cutlass::gemm::KernelTmaWarpSpecialized2SmNvf4Sm100>;
  // Per-CTA tile: a 2SM MMA tile is split along M over the CTA pair.
  using CtaTileShape = cute::Shape<cute::Int<cute::size<0>(MmaTileShape{}) / (k2Sm ? 2 : 1)>,
                                   cute::Int<cute::size<1>(MmaTileShape{})>, cute::Int<cute::size<2>(MmaTileShape{})>>;
  static constexpr int kAlignmentD = 128 / cutlass::sizeof_bits<ElementD>::value;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm100, cutlass::arch::OpClassBlockScaledTensorOp, MmaTileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, ElementCompute,
      void, LayoutD, kAlignmentD, ElementD, LayoutD, kAlignmentD, EpilogueSchedule,
      AlphaRowBiasColEVT<CtaTileShape, ElementD>>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm100, cutlass::arch::OpClassBlockScaledTensorOp, ElementPairNvf4, LayoutA, kAlignmentAB,
      ElementPairNvf4, LayoutB, kAlignmentAB, ElementAccumulator, MmaTileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                          CollectiveEpilogue, cutlass::gemm::PersistentScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

}  // namespace sm100
}  // namespace nvfp4

// Defines nvfp4::sm100::run_<NAME> and check_<NAME> for bf16 and fp16 output.
#define NVFP4_SM100_DEFINE_CONFIG(NAME, CONFIG_ID, MMA_TILE, CLUSTER, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE)            \
  namespace nvfp4 {                                                                                               \
  namespace sm100 {                                                                                               \
  namespace {                                                                                                     \
  template <class ElementD>                                                                                       \
  using NAME##_gemm = typename Sm100Nvf4Gemm<MMA_TILE, CLUSTER, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE, ElementD>::Gemm; \
  }                                                                                                               \
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
