// Internal helpers for the C ABI's error reporting: one thread-local message, set where a check fails.
#pragma once
#include <cstdarg>
#include <cstdint>

#include "nvfp4/nvfp4.h"

namespace nvfp4 {

// Formats the message that nvfp4_last_error() returns on this thread and returns `status`.
int fail(int status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

// Returns NVFP4_OK, or NVFP4_ERR_CUDA with the message "<what>: <cuda error string>".
int check_cuda(int cuda_error, const char* what);

// Compute capability of the current device as major*10+minor (e.g. 90), or a negative value with the error set.
int current_device_sm();

inline bool aligned_to(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) % bytes) == 0; }

}  // namespace nvfp4

#define NVFP4_REQUIRE(cond, ...)                                   \
  do {                                                             \
    if (!(cond)) return ::nvfp4::fail(NVFP4_ERR_INVALID_ARGUMENT, __VA_ARGS__); \
  } while (0)
