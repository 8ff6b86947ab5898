// CUTLASS 3.x (4.2) type composition of one SM120 NVFP4 configuration. Included by one TU per configuration.
#pragma once
#include "../sm100/blockscaled_common.h"
#include "../sm100/blockscaled_runner.cuh"
#include "config.h"

namespace nvfp4 {
namespace sm120 {

using namespace nvfp4::blackwell;

// SM120 has no clusters and no 2SM MMAs: the CTA tile is the MMA tile.
template <class TileShape, class MainloopSchedule, class EpilogueSchedule, class ElementD>
struct Sm120Nvf4GemmOf {
  static_assert(cute::size<2>(TileShape{}) == kTileK, "every SM120 configuration has the tile K of config.h");
  using Gemm = typename BlockScaledNvf4Gemm<cutlass::arch::Sm120, TileShape, TileShape,
                                            cute::Shape<cute::_1, cute::_1, cute::_1>, MainloopSchedule,
                                            EpilogueSchedule, ElementD>::Gemm;
};
template <class TileShape, class MainloopSchedule, class EpilogueSchedule, class ElementD>
using Sm120Nvf4Gemm = typename Sm120Nvf4GemmOf<TileShape, MainloopSchedule, EpilogueSchedule, ElementD>::Gemm;

}  // namespace sm120
}  // namespace nvfp4

// Defines nvfp4::sm120::run_<NAME> and check_<NAME> for bf16 and fp16 output.
#define NVFP4_SM120_DEFINE_CONFIG(NAME, CONFIG_ID, TILE, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE)  \
  namespace nvfp4 {                                                                       \
  namespace sm120 {                                                                       \
  template <class ElementD>                                                               \
  using NAME##_gemm = Sm120Nvf4Gemm<TILE, MAINLOOP_SCHEDULE, EPILOGUE_SCHEDULE, ElementD>;  \
  }                                                                                       \
  }                                                                                       \
  NVFP4_BLACKWELL_DEFINE_RUNNERS(sm120, NAME, CONFIG_ID)
