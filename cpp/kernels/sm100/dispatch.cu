// C ABI of the SM100 (sm_100a: B200/GB200) NVFP4 x NVFP4 GEMM: configuration table, entry points, host checks.
// Host code only; the configurations are compiled in their own TUs (gemm_*.cu), each for sm_100a alone.
#include "abi_common.h"
#include "config.h"

namespace nvfp4 {
namespace sm100 {
int run_cfg_1sm_128x128x256(const blackwell::GemmArgs&);
int check_cfg_1sm_128x128x256(const blackwell::GemmArgs&, blackwell::HostCheck*);
int run_cfg_2sm_256x128x256(const blackwell::GemmArgs&);
int check_cfg_2sm_256x128x256(const blackwell::GemmArgs&, blackwell::HostCheck*);
int run_cfg_2sm_256x256x256(const blackwell::GemmArgs&);
int check_cfg_2sm_256x256x256(const blackwell::GemmArgs&, blackwell::HostCheck*);

namespace {
// Indexed by the Config enum of config.h.
const blackwell::ConfigEntry kTable[kNumConfigs] = {
    {config_name(k1Sm_128x128x256), run_cfg_1sm_128x128x256, check_cfg_1sm_128x128x256},
    {config_name(k2Sm_256x128x256), run_cfg_2sm_256x128x256, check_cfg_2sm_256x128x256},
    {config_name(k2Sm_256x256x256), run_cfg_2sm_256x256x256, check_cfg_2sm_256x256x256},
};
int select(int64_t M, int64_t N, int64_t K, int invariant) { return select_config(M, N, K, invariant); }
const blackwell::Family kFamily{"nvfp4_sm100_gemm", 100, kTable, kNumConfigs, kTileK, select};
}  // namespace
}  // namespace sm100
}  // namespace nvfp4

NVFP4_DEFINE_BLACKWELL_ABI(sm100, nvfp4::sm100::kFamily)
