// NVFP4 GEMM kernel config: token tile (wgmma N) = 32. Compile with -gencode arch=compute_90a,code=sm_90a only.
#include "launch.cuh"

namespace nvfp4 {
namespace sm90 {
int launch_bt32(const GemmParams& p, int out_dtype, bool split, int splits, cudaStream_t stream) {
  return launch_bt_impl<32>(p, out_dtype, split, splits, stream);
}
}  // namespace sm90
}  // namespace nvfp4
