// Host-only check of the 128x4 block-scale layout: prints, for a (rows, K) problem, the byte offset that CUTLASS's
// Sm1xxBlockScaledConfig<16> (the SFA/SFB layout of the SM100/SM120 block-scaled GEMMs) assigns to the scale of
// each (row, 16-element K group), plus the layout's total size. tests/test_scale_layout_cutlass.py compares the
// output with nvfp4.format.swizzled_scale_offset and swizzle_scales. No GPU is needed.
#include <cstdio>
#include <cstdlib>

#include "cute/tensor.hpp"
#include "cutlass/detail/sm100_blockscaled_layout.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s ROWS K\n", argv[0]);
    return 2;
  }
  const int rows = std::atoi(argv[1]);
  const int k = std::atoi(argv[2]);
  using Config = cutlass::detail::Sm1xxBlockScaledConfig<16>;
  // The A operand's layout for an (M=rows, N=1, K) problem; SFB uses the same atom along N.
  auto layout_a = Config::tile_atom_to_shape_SFA(cute::make_shape(rows, 1, k, 1));
  auto layout_b = Config::tile_atom_to_shape_SFB(cute::make_shape(1, rows, k, 1));
  std::printf("cosize %d %d\n", int(cute::cosize(layout_a)), int(cute::cosize(layout_b)));
  for (int r = 0; r < rows; ++r) {
    for (int g = 0; g < k / 16; ++g) {
      const int a = int(layout_a(r, g * 16, 0));
      const int b = int(layout_b(r, g * 16, 0));
      if (a != b) {
        std::printf("SFA and SFB disagree at row %d group %d: %d vs %d\n", r, g, a, b);
        return 1;
      }
      // Every element of the 16-wide group must map to the same scale byte.
      if (int(layout_a(r, g * 16 + 15, 0)) != a) {
        std::printf("group %d of row %d spans two scale bytes\n", g, r);
        return 1;
      }
      std::printf("%d ", a);
    }
    std::printf("\n");
  }
  return 0;
}
