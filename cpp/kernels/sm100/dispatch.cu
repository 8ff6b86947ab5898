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
const blackwell::Family kFamily{"nvfp4_sm100_gemm", 100, kTable, kNumConfigs, select};
}  // namespace
}  // namespace sm100
}  // namespace nvfp4

using nvfp4::sm100::kFamily;

extern "C" {

int nvfp4_sm100_num_configs(void) { return nvfp4::sm100::kNumConfigs; }

int nvfp4_sm100_config_info(int index, char* name, size_t capacity) {
  NVFP4_REQUIRE(index >= 0 && index < nvfp4::sm100::kNumConfigs, "nvfp4_sm100_config_info: index must be in [0, %d)",
                nvfp4::sm100::kNumConfigs);
  return nvfp4::blackwell::copy_name(kFamily.table[index].name, name, capacity);
}

int nvfp4_sm100_select_config(int64_t M, int64_t N, int64_t K, int invariant, int* index) {
  return nvfp4::blackwell::config_index(kFamily, M, N, K, invariant, index);
}

int nvfp4_sm100_config_name(int64_t M, int64_t N, int64_t K, int invariant, char* buf, size_t capacity) {
  int index = 0;
  int rc = nvfp4::blackwell::config_index(kFamily, M, N, K, invariant, &index);
  if (rc != NVFP4_OK) return -rc;
  return nvfp4::blackwell::copy_name(kFamily.table[index].name, buf, capacity);
}

int nvfp4_sm100_host_check(int index, int64_t M, int64_t N, int64_t K, int out_dtype, int sm_count,
                           int* can_implement, size_t* workspace_bytes, int* layout_ok) {
  return nvfp4::blackwell::host_check(kFamily, index, M, N, K, out_dtype, sm_count, can_implement, workspace_bytes,
                                      layout_ok);
}

int nvfp4_sm100_gemm_workspace_size(int64_t M, int64_t N, int64_t K, int invariant, size_t* bytes) {
  return nvfp4::blackwell::workspace_size(kFamily, M, N, K, invariant, bytes);
}

int nvfp4_sm100_gemm(const uint8_t* act_packed, const uint8_t* act_scales, int64_t M, int64_t N, int64_t K,
                     const uint8_t* w_packed, const uint8_t* w_scales, const float* alpha, int alpha_per_row,
                     const void* bias, void* out, int out_dtype, int64_t out_row_stride, int invariant,
                     void* workspace, size_t workspace_bytes, void* stream) {
  return nvfp4::blackwell::gemm(kFamily, act_packed, act_scales, M, N, K, w_packed, w_scales, alpha, alpha_per_row,
                                bias, out, out_dtype, out_row_stride, invariant, workspace, workspace_bytes, stream);
}

}  // extern "C"
