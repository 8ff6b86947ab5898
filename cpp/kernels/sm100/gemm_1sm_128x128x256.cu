// SM100 configuration k1Sm_128x128x256 (see config.h): fast mode for M <= 128.
// Compiled for sm_100a only (cmake/nvfp4_kernel_sources.cmake).
#include "gemm_sm100.cuh"

namespace nvfp4 {
namespace sm100 {
using cfg_1sm_128x128x256_mma = cute::Shape<cute::_128, cute::_128, cute::_256>;
using cfg_1sm_128x128x256_cluster = cute::Shape<cute::_1, cute::_1, cute::_1>;
}  // namespace sm100
}  // namespace nvfp4

NVFP4_SM100_DEFINE_CONFIG(cfg_1sm_128x128x256, k1Sm_128x128x256, cfg_1sm_128x128x256_mma, cfg_1sm_128x128x256_cluster, cutlass::gemm::KernelTmaWarpSpecialized1SmNvf4Sm100, cutlass::epilogue::TmaWarpSpecialized1Sm)
