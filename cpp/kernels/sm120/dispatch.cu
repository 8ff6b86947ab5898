// C ABI of the SM120 (sm_120a: RTX 50 / RTX PRO) NVFP4 x NVFP4 GEMM: configuration table, entry points, host checks.
// Host code only; the configurations are compiled in their own TUs (gemm_*.cu), each for sm_120a alone.
#include "../sm100/abi_common.h"
#include "config.h"

namespace nvfp4 {
namespace sm120 {
int run_cfg_coop_128x128x128(const blackwell::GemmArgs&);
int check_cfg_coop_128x128x128(const blackwell::GemmArgs&, blackwell::HostCheck*);
int run_cfg_coop_256x128x128(const blackwell::GemmArgs&);
int check_cfg_coop_256x128x128(const blackwell::GemmArgs&, blackwell::HostCheck*);

namespace {
// Indexed by the Config enum of config.h.
const blackwell::ConfigEntry kTable[kNumConfigs] = {
    {config_name(kCoop_128x128x128), run_cfg_coop_128x128x128, check_cfg_coop_128x128x128},
    {config_name(kCoop_256x128x128), run_cfg_coop_256x128x128, check_cfg_coop_256x128x128},
};
int select(int64_t M, int64_t N, int64_t K, int invariant) { return select_config(M, N, K, invariant); }
const blackwell::Family kFamily{"nvfp4_sm120_gemm", 120, kTable, kNumConfigs, kTileK, select};
}  // namespace
}  // namespace sm120
}  // namespace nvfp4

NVFP4_DEFINE_BLACKWELL_ABI(sm120, nvfp4::sm120::kFamily)
