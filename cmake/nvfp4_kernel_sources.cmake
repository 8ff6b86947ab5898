# The kernel configurations of each architecture, one .cu per configuration (paths relative to the project root).
# Hopper: the C ABI entry points + split-K reduction (dispatch.cu) and one file per token-tile config.
set(NVFP4_SM90_SOURCES
    cpp/kernels/sm90/dispatch.cu
    cpp/kernels/sm90/gemm_bt8.cu
    cpp/kernels/sm90/gemm_bt16.cu
    cpp/kernels/sm90/gemm_bt32.cu
    cpp/kernels/sm90/gemm_bt64.cu
    cpp/kernels/sm90/gemm_bt128.cu)
set(NVFP4_SM100_SOURCES "")
set(NVFP4_SM120_SOURCES "")
