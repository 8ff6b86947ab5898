// SM100 configuration k2Sm_256x256x256 (see config.h): invariant mode for N > 2048, fast mode for M > 128 and N > 2048.
// Compiled for sm_100a only (cmake/nvfp4_kernel_sources.cmake).
#include "gemm_sm100.cuh"

namespace nvfp4 {
namespace sm100 {
using cfg_2sm_256x256x256_mma = cute::Shape<cute::_256, cute::_256, cute::_256>;
using cfg_2sm_256x256x256_cluster = cute::Shape<cute::_2, cute::_1, cute::_1>;
}  // namespace sm100
}  // namespace nvfp4

NVFP4_SM100_DEFINE_CONFIG(cfg_2sm_256x256x256, k2Sm_256x256x256, cfg_2sm_256x256x256_mma, cfg_2sm_256x256x256_cluster, cutlass::gemm::KernelTmaWarpSpecialized2SmNvf4Sm100, cutlass::epilogue::TmaWarpSpecialized2Sm)
