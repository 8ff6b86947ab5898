// NVFP4 GEMM kernels of the 128-token tile (kernel.cuh). Compile for sm_90a only.
#include "tile.cuh"

namespace nvfp4 {
namespace sm90 {
TileEntry tile_bt128() { return make_tile_entry<128>(); }
}  // namespace sm90
}  // namespace nvfp4
