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
  static_assert(cute::size<2>(MmaTileShape{}) == kTileK, "every SM100 configuration has the tile K of config.h");
  using Gemm = typename BlockScaledNvf4Gemm<cutlass::arch::Sm100, MmaTileShape, CtaTileShape, ClusterShape,
                                            MainloopSchedule, EpilogueSchedule, ElementD>::Gemm;
};

}  // namespace sm100
}  // namespace nvfp4

// Defines nvfp4::sm100::run_<NAME> and check_<NAME> for bf16 and fp16 output.
#define NVFP4_SM100_DEFINE_CONFIG(NAME, CONFIG_ID, MMA_TILE, CLUSTER, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE)   \
  namespace nvfp4 {                                                                                      \
  namespace sm100 {                                                                                      \
  template <class ElementD>                                                                              \
  using NAME##_gemm = typename Sm100Nvf4Gemm<MMA_TILE, CLUSTER, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE, ElementD>::Gemm; \
  }                                                                                                      \
  }                                                                                                      \
  NVFP4_BLACKWELL_DEFINE_RUNNERS(sm100, NAME, CONFIG_ID)
