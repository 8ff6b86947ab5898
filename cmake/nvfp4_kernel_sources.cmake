# The kernel configurations of each architecture, one .cu per configuration (paths relative to the project root).
set(NVFP4_SM90_SOURCES "")
set(NVFP4_SM100_SOURCES "")
set(NVFP4_SM120_SOURCES "")
