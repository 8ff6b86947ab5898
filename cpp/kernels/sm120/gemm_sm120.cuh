// CUTLASS 3.x (4.2) type composition of one SM120 NVFP4 configuration. Included by one TU per configuration.
#pragma once
#include "../sm100/blockscaled_common.h"
#include "../sm100/blockscaled_runner.cuh"
#include "config.h"

namespace nvfp4 {
namespace sm120 {

using namespace nvfp4::blackwell;

template <class TileShape, class MainloopSchedule, class EpilogueSchedule, class ElementD>
struct Sm120Nvf4Gemm {
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;  // SM120: no clusters
  static constexpr int kAlignmentD = 128 / cutlass::sizeof_bits<ElementD>::value;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm120, cutlass::arch::OpClassBlockScaledTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, ElementCompute,
      void, LayoutD, kAlignmentD, ElementD, LayoutD, kAlignmentD, EpilogueSchedule,
      AlphaRowBiasColEVT<TileShape, ElementD>>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm120, cutlass::arch::OpClassBlockScaledTensorOp, ElementPairNvf4, LayoutA, kAlignmentAB,
      ElementPairNvf4, LayoutB, kAlignmentAB, ElementAccumulator, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;

  using GemmKernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                          CollectiveEpilogue, cutlass::gemm::PersistentScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;
};

}  // namespace sm120
}  // namespace nvfp4

// Defines nvfp4::sm120::run_<NAME> and check_<NAME> for bf16 and fp16 output.
#define NVFP4_SM120_DEFINE_CONFIG(NAME, CONFIG_ID, TILE, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE)                      \
  namespace nvfp4 {                                                                                               \
  namespace sm120 {                                                                                               \
  namespace {                                                                                                     \
  template <class ElementD>                                                                                       \
  using NAME##_gemm = typename Sm120Nvf4Gemm<TILE, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE, ElementD>::Gemm;          \
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
