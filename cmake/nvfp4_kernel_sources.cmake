# The kernel configurations of each architecture, one .cu per configuration (paths relative to the project root).
# Hopper: the C ABI entry points, plan and split-K reduction (dispatch.cu), one file per token tile (the kernels of
# that wgmma N: whole-K, split-K and, for the decode tiles, the fused-quantizer variants).
set(NVFP4_SM90_SOURCES
    cpp/kernels/sm90/dispatch.cu
    cpp/kernels/sm90/gemm_bt8.cu
    cpp/kernels/sm90/gemm_bt16.cu
    cpp/kernels/sm90/gemm_bt32.cu
    cpp/kernels/sm90/gemm_bt64.cu
    cpp/kernels/sm90/gemm_bt128.cu)
# SM100 (sm_100a): one CUTLASS configuration per TU (cpp/kernels/sm100/config.h has the table) + the C ABI.
set(NVFP4_SM100_SOURCES
    cpp/kernels/sm100/dispatch.cu
    cpp/kernels/sm100/gemm_1sm_128x128x256.cu
    cpp/kernels/sm100/gemm_2sm_256x128x256.cu
    cpp/kernels/sm100/gemm_2sm_256x256x256.cu)
# SM120 (sm_120a): one CUTLASS configuration per TU (cpp/kernels/sm120/config.h has the table) + the C ABI.
set(NVFP4_SM120_SOURCES
    cpp/kernels/sm120/dispatch.cu
    cpp/kernels/sm120/gemm_coop_128x128x128.cu
    cpp/kernels/sm120/gemm_coop_256x128x128.cu)
