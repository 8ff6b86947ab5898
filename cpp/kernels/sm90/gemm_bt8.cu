// NVFP4 GEMM kernel config: token tile (wgmma N) = 8. Compile with -gencode arch=compute_90a,code=sm_90a only.
#include "launch.cuh"

namespace nvfp4 {
namespace sm90 {
TileEntry tile_bt8() { return make_tile_entry<8>(); }
}  // namespace sm90
}  // namespace nvfp4
