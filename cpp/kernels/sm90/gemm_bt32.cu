// NVFP4 GEMM kernels of the 32-token tile (kernel.cuh). Compile for sm_90a only.
#include "tile.cuh"

namespace nvfp4 {
namespace sm90 {
TileEntry tile_bt32() { return make_tile_entry<32>(); }
}  // namespace sm90
}  // namespace nvfp4
