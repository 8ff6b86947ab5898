// SM120 configuration kCoop_256x128x128 (see config.h): invariant mode for N > 4096, fast mode for M > 128.
// Compiled for sm_120a only (cmake/nvfp4_kernel_sources.cmake).
#include "gemm_sm120.cuh"

namespace nvfp4 {
namespace sm120 {
using cfg_coop_256x128x128_tile = cute::Shape<cute::_256, cute::_128, cute::_128>;
}  // namespace sm120
}  // namespace nvfp4

NVFP4_SM120_DEFINE_CONFIG(cfg_coop_256x128x128, kCoop_256x128x128, cfg_coop_256x128x128_tile, cutlass::gemm::KernelTmaWarpSpecializedNvf4Sm120,
                          cutlass::epilogue::TmaWarpSpecializedCooperative)
