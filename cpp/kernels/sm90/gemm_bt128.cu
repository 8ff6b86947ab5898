// NVFP4 GEMM kernel config: token tile (wgmma N) = 128. Compile with -gencode arch=compute_90a,code=sm_90a only.
#include "launch.cuh"

namespace nvfp4 {
namespace sm90 {
TileEntry tile_bt128() { return make_tile_entry<128>(); }
}  // namespace sm90
}  // namespace nvfp4
