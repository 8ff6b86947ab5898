// NVFP4 GEMM kernel config: token tile (wgmma N) = 64. Compile with -gencode arch=compute_90a,code=sm_90a only.
#include "launch.cuh"

namespace nvfp4 {
namespace sm90 {
TileEntry tile_bt64() { return make_tile_entry<64>(); }
}  // namespace sm90
}  // namespace nvfp4
