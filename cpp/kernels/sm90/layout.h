// The Hopper runtime weight layout (made by python/nvfp4/backends/sm90.py prepack(), the one definition; reversed
// by unprepack() for state_dict/save). Rows come in slabs of 16 (one warp's share of a 64-row wgmma A tile), K in
// groups of 64; N is padded to 16 and K to 64 with zero codes and zero scales.
//   bytes[slab][kgroup][576]: [0, 512): lane L (g = L/4, t = L%4) owns 16 bytes = 4 little-endian words, word s for
//   the k16 step s (k = 64*kgroup + 16*s + ...): its 8 e2m1 codes are exactly the thread's wgmma A fragment
//   (rows g and g+8; k 2t, 2t+1, 2t+8, 2t+9), bit-placed so that each bf16x2 register comes out of one or a few
//   integer ops (kernel.cuh, dequant_step):
//     a0 = (row g,   k 2t | 2t+1):   code bits 0..3 at 6,7,8,15   | 22,23,24,31  -> w & 0x81C081C0
//     a1 = (row g+8, k 2t | 2t+1):   at 3,4,5,12  | 19,20,21,28                  -> (w << 3) & 0x81C081C0
//     a2 = (row g,   k 2t+8 | 2t+9): at 0,1,2,9   | 16,17,18,25                  -> (w << 6) & 0x81C081C0
//     a3 = (row g+8, k 2t+8 | 2t+9): at 10,11,13,14 | 26,27,29,30                -> three shifts and masks
//   [512, 576): the e4m3 block scales, 8 bytes per g: byte 2*s + h = scale of row g + 8h for the k16 step s.
// A warp reads its slab's 512 + 64 bytes with one 16-byte and one 8-byte shared-memory load per lane and k-group,
// conflict-free; a CTA's 128 rows x BK are 8 contiguous runs, one bulk copy each. Exactly 0.5625 bytes per weight.
#pragma once

namespace nvfp4 {
namespace sm90 {

constexpr int kSlabRows = 16;
constexpr int kKGroup = 64;
constexpr int kGroupWeightBytes = 512;
constexpr int kGroupBytes = 576;
constexpr uint32_t kPairMask = 0x81C081C0u;

}  // namespace sm90
}  // namespace nvfp4
