"""Helpers shared by the device diagnostics tools/timing_probe.py and tools/gap_probe.py."""
import ctypes
import subprocess
from pathlib import Path

_BENCH_SOURCE = Path(__file__).resolve().parents[1] / "bench" / "cpp" / "nvfp4_bench.cu"

# C entry points over nvfp4_bench's fill kernels (default stream) and a one-thread busy-wait kernel
_WRAPPERS = """
__global__ void spin_kernel(long long c) { long long t = clock64(); while (clock64() - t < c) {} }
extern "C" void fill_bytes(void* p, size_t n, uint64_t seed) { fill_bytes_kernel<<<264, 256>>>((uint8_t*)p, n, seed); }
extern "C" void fill_scales(void* p, int64_t rows, int64_t groups, uint64_t seed) {
  fill_scales_kernel<<<264, 256>>>((uint8_t*)p, rows, groups, seed); }
extern "C" void fill_bf16(void* p, size_t n, uint64_t seed, float scale) {
  fill_bf16_kernel<<<264, 256>>>((__nv_bfloat16*)p, n, seed, scale); }
extern "C" void fill_act(void* p, int64_t m, int64_t k, uint64_t seed) {
  fill_activations_kernel<<<264, 256>>>((__nv_bfloat16*)p, m, k, seed); }
extern "C" void spin(long long c, void* s) { spin_kernel<<<1, 1, 0, (cudaStream_t)s>>>(c); }
"""


def bench_fill_source() -> str:
    """nvfp4_bench's device-side data generators (hash, fill kernels) as compilable CUDA source, so that the probes
    fill their buffers with exactly the C++ harness's data (one source: the text is cut out of nvfp4_bench.cu)."""
    src = _BENCH_SOURCE.read_text()
    gen = src[src.index("__host__ __device__ inline uint64_t mix64"):src.index("__global__ void fill_f32_kernel")]
    return "#include <cstdint>\n#include <cstddef>\n#include <cuda_bf16.h>\n" + gen


def fill_library(path: str = "/tmp/probe_fill.so") -> ctypes.CDLL:
    """bench_fill_source() plus C wrappers, built with nvcc for sm_90a against the shared libcudart (load that
    libcudart first) and loaded: fill_bytes, fill_scales, fill_bf16, fill_act, spin(cycles, stream)."""
    cu = path[:-3] + ".cu"
    Path(cu).write_text(bench_fill_source() + _WRAPPERS)
    subprocess.run(["nvcc", "-O2", "-shared", "-Xcompiler", "-fPIC", "-arch=sm_90a", "-cudart", "shared", "-o", path,
                    cu], check=True)
    lib = ctypes.CDLL(path)
    u64, i64, vp = ctypes.c_uint64, ctypes.c_int64, ctypes.c_void_p
    lib.fill_bytes.argtypes = [vp, ctypes.c_size_t, u64]
    lib.fill_scales.argtypes = [vp, i64, i64, u64]
    lib.fill_bf16.argtypes = [vp, ctypes.c_size_t, u64, ctypes.c_float]
    lib.fill_act.argtypes = [vp, i64, i64, u64]
    lib.spin.argtypes = [ctypes.c_longlong, vp]
    return lib


def ck(rc: int, what: str) -> None:
    """Raise on a non-zero cudaError_t returned through ctypes."""
    if rc != 0:
        raise RuntimeError(f"{what}: cudaError {rc}")
