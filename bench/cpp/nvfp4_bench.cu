// nvfp4_bench: times every GEMM configuration and mode the nvfp4 library exposes through its C ABI
// (cpp/include/nvfp4/nvfp4.h) over a shape preset x M sweep, checking batch invariance as it goes.
//
//   nvfp4_bench [--preset llama-3.1-8b,llama-3.1-70b,qwen3-32b,deepseek-v3|all] [--shape NxK,...] [--m 1,16,256]
//               [--quick] [--calls 20] [--replays 5] [--flush-mb 200] [--no-cublas] [--out DIR] [--tag NAME]
//               [--list-presets]
//
// Method (the same as bench/bench_hopper.py and bench/compare.py, bench/timing.py): each measurement captures one
// CUDA graph of `calls` back-to-back calls cycling over weight copies whose total size is >= --flush-mb (so L2 never
// serves the weights), replays it until --replays replays in a row bring no new best and keeps the best per-call time.
// Data is generated on the GPU: random e2m1 codes, e4m3 block scales 2^-9..2^8 (wide spread), bf16 activations
// with block and row magnitudes spread over 2^20 and 2^24, quantized per token by nvfp4_quantize_activations into
// the exact dequantized bf16 form (Hopper GEMM operand) or packed NVFP4 + swizzled scales (Blackwell operand).
// Invariance: for the invariant mode, rows {0, M/2, M-1} of each M-row result must equal, bitwise, the same row
// quantized and multiplied alone (M = 1).
//
// Exit status: 0 ok; 1 invariance failure or a CUDA / library error; 2 bad arguments; 3 no kernel of the library
// (or of this executable) serves this GPU; 77 no CUDA GPU (ctest reports it as skipped).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <string>
#include <sys/stat.h>
#include <type_traits>
#include <vector>

#include "nvfp4_bench_presets.h"  // kPresetsText: bench/presets.txt, embedded by bench/CMakeLists.txt

#include "nvfp4/nvfp4.h"

#ifdef NVFP4_BENCH_HAS_CUBLAS
#include <cublas_v2.h>
#endif

namespace {

constexpr int kExitInvariance = 1;
constexpr int kExitArgs = 2;
constexpr int kExitNoKernels = 3;
constexpr int kExitNoGpu = 77;

[[noreturn]] void die(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "nvfp4_bench: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(code);
}

#define CK(call)                                                                                           \
  do {                                                                                                     \
    cudaError_t e_ = (call);                                                                               \
    if (e_ != cudaSuccess) die(1, "CUDA error '%s' in %s (%s:%d)", cudaGetErrorString(e_), #call, __FILE__, \
                               __LINE__);                                                                  \
  } while (0)

#define NV(call)                                                                                               \
  do {                                                                                                         \
    int s_ = (call);                                                                                           \
    if (s_ != NVFP4_OK) die(1, "%s returned status %d: %s (%s:%d)", #call, s_, nvfp4_last_error(), __FILE__, \
                            __LINE__);                                                                         \
  } while (0)

// ---------------------------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------------------------
struct Shape {
  std::string preset, name;
  int64_t N, K;
};

// The presets and M sweeps come from bench/presets.txt (one source with bench/timing.py), embedded by CMake as
// kPresetsText (nvfp4_bench_presets.h, generated in the build tree).
struct Presets {
  std::vector<Shape> shapes;
  std::vector<int64_t> m, quick_m;
};

const Presets& presets_table() {
  static const Presets table = [] {
    Presets p;
    size_t start = 0;
    const std::string text = kPresetsText;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(start, end - start);
      start = end + 1;
      line = line.substr(0, line.find('#'));
      std::vector<std::string> words;
      for (size_t a = 0; a < line.size();) {
        while (a < line.size() && isspace((unsigned char)line[a])) ++a;
        size_t b = a;
        while (b < line.size() && !isspace((unsigned char)line[b])) ++b;
        if (b > a) words.push_back(line.substr(a, b - a));
        a = b;
      }
      if (words.empty()) continue;
      if (words[0] == "m" || words[0] == "quick-m") {
        std::vector<int64_t>& dst = words[0] == "m" ? p.m : p.quick_m;
        for (size_t w = 1; w < words.size(); ++w) dst.push_back(std::stoll(words[w]));
      } else if (words.size() == 4) {
        p.shapes.push_back({words[0], words[1], std::stoll(words[2]), std::stoll(words[3])});
      } else {
        fprintf(stderr, "nvfp4_bench: bench/presets.txt: cannot read the line '%s'\n", line.c_str());
        exit(2);
      }
    }
    return p;
  }();
  return table;
}

const std::vector<Shape>& all_presets() { return presets_table().shapes; }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

int64_t parse_int(const std::string& s, const char* what) {
  char* end = nullptr;
  long long v = strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < 1) die(kExitArgs, "%s: '%s' is not a positive integer", what, s.c_str());
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Device-side data generation (counter-based hash, so every buffer is a pure function of its seed)
// ---------------------------------------------------------------------------------------------------------------
__host__ __device__ inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
__device__ inline uint64_t rnd(uint64_t seed, uint64_t i) { return mix64(seed * 0x9E3779B97F4A7C15ULL + i + 1); }
__device__ inline float u11(uint64_t seed, uint64_t i) {  // uniform in [-1, 1)
  return (float)(rnd(seed, i) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_bytes_kernel(uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = (uint8_t)(rnd(seed, i) & 0xff);
}

__device__ __forceinline__ uint8_t scale_byte(uint64_t seed, size_t i) {  // e4m3 2^e, e uniform in [-9, 8]
  const int e = (int)(rnd(seed, i) % 18) - 9;
  return e >= -6 ? (uint8_t)((e + 7) << 3) : (uint8_t)(1 << (e + 9));  // normal / subnormal
}

// The Hopper runtime layout (cpp/kernels/sm90/layout.h): per 576-byte (16-row slab, 64-k group), 512 bytes of
// random codes and 64 bytes of block scales.
__global__ void fill_prepacked_kernel(uint8_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = i % 576 < 512 ? (uint8_t)(rnd(seed, i) & 0xff) : scale_byte(seed + 7, i);
}

// e4m3 block scales 2^e, e uniform in [-9, 8], written at their 128x4-swizzled offsets (the padding stays zero).
__global__ void fill_scales_kernel(uint8_t* p, int64_t rows, int64_t groups, uint64_t seed) {
  const int64_t g4 = (groups + 3) / 4;
  const size_t n = (size_t)rows * groups;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int64_t r = (int64_t)(i / groups), g = (int64_t)(i % groups);
    const uint8_t byte = scale_byte(seed, i);
    const int64_t off = ((r / 128) * g4 + g / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + (g % 4);
    p[off] = byte;
  }
}

__global__ void fill_bf16_kernel(__nv_bfloat16* p, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = __float2bfloat16(u11(seed, i) * scale);
}

// Activations: uniform values times 2^[-10, 9] per 16-element block times 2^[-12, 11] per row.
__global__ void fill_activations_kernel(__nv_bfloat16* x, int64_t m, int64_t k, uint64_t seed) {
  const size_t n = (size_t)m * k;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int64_t r = (int64_t)(i / k), c = (int64_t)(i % k);
    const int eb = (int)(rnd(seed ^ 0xB10C, (uint64_t)r * (k / 16) + c / 16) % 20) - 10;
    const int er = (int)(rnd(seed ^ 0x7077, (uint64_t)r) % 24) - 12;
    x[i] = __float2bfloat16(ldexpf(u11(seed, i), eb + er));
  }
}

__global__ void fill_f32_kernel(float* p, size_t n, float v) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = v;
}

__global__ void read_kernel(const float4* p, size_t n, float* sink) {
  float acc = 0.f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float4 v = p[i];
    acc += v.x + v.y + v.z + v.w;
  }
  if (acc == 123456.789f) *sink = acc;  // keeps the loads alive
}

constexpr int kGrid = 1024, kBlock = 256;

// ---------------------------------------------------------------------------------------------------------------
// Buffers
// ---------------------------------------------------------------------------------------------------------------
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(size_t n) { alloc(n); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; o.bytes = 0; }
  ~DevBuf() { if (p) cudaFree(p); }
  void alloc(size_t n) {
    if (p) CK(cudaFree(p));
    p = nullptr;
    bytes = n;
    if (n) CK(cudaMalloc(&p, n));
  }
  void ensure(size_t n) { if (n > bytes) alloc(n); }
  template <class T> T* as() const { return static_cast<T*>(p); }
};

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }
size_t swizzled_scale_bytes(int64_t rows, int64_t k) { return (size_t)round_up(rows, 128) * round_up(k / 16, 4); }
// Bytes of one NVFP4 weight copy as counted for the L2 rotation and the bandwidth floor (also in bench/timing.py).
size_t nvfp4_weight_bytes(int64_t n, int64_t k) { return (size_t)(n * k / 2 + n * k / 16); }

// ---------------------------------------------------------------------------------------------------------------
// ABI entry points: the GEMMs exist only for the archs the library was built for, so they are looked up at run time
// (dlsym in the already linked library) with the header's own prototypes.
// ---------------------------------------------------------------------------------------------------------------
using Sm90Linear = decltype(&nvfp4_sm90_linear);
using Sm90Ws = decltype(&nvfp4_sm90_linear_workspace_size);
using Sm90Plan = decltype(&nvfp4_sm90_linear_plan);
using Sm90Bytes = decltype(&nvfp4_sm90_prepacked_bytes);
using Sm90SetReduce = decltype(&nvfp4_sm90_set_split_reduce);
using BwGemm = decltype(&nvfp4_sm100_gemm);
using BwWs = decltype(&nvfp4_sm100_gemm_workspace_size);
using BwName = decltype(&nvfp4_sm100_config_name);
static_assert(std::is_same<BwGemm, decltype(&nvfp4_sm120_gemm)>::value, "sm100 / sm120 GEMM prototypes differ");

template <class F> F lookup(const char* name) { return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name)); }

// One "family" = one GEMM entry point of the ABI (sm90: the whole layer in one call, or the GEMM alone on dequantized
// bf16 activations; sm100/sm120 take NVFP4 activations).
struct Family {
  std::string name;  // "sm90", "sm100", "sm120"
  int sm = 0;
  bool nvfp4_act = false;
  Sm90Linear sm90 = nullptr;
  Sm90Ws sm90_ws = nullptr;
  Sm90Plan sm90_plan = nullptr;
  Sm90Bytes sm90_bytes = nullptr;
  BwGemm bw = nullptr;
  BwWs bw_ws = nullptr;
  BwName bw_name = nullptr;
};

// ---------------------------------------------------------------------------------------------------------------
// Timing: one CUDA graph of `calls` back-to-back calls cycling over `copies` argument sets; best of the replays once
// settled (`replays` in a row without a new best).
// A busy-wait kernel of spin_us() microseconds runs in front of each start event, so the events bracket the graph's execution
// and not the CPU's submission of it (the same as bench/timing.py; its docstring says why).
// ---------------------------------------------------------------------------------------------------------------
// NVFP4_BENCH_SPIN_US overrides the length (0: no spin, to see what it removes); bench/timing.py reads it too.
static double spin_us() {
  const char* v = getenv("NVFP4_BENCH_SPIN_US");
  return v && *v ? atof(v) : 200.0;
}
// GPU time of untimed replays before the timed ones, so the clocks are up again after the host-side work between
// two measurements (bench/timing.py says more); NVFP4_BENCH_WARM_MS overrides it.
static double warm_ms() {
  const char* v = getenv("NVFP4_BENCH_WARM_MS");
  return v && *v ? atof(v) : 30.0;
}
// The same for the first measurement after a shape's setup (bench/timing.py's WARM_FIRST_MS says why);
// NVFP4_BENCH_WARM_FIRST_MS overrides it.
static double warm_first_ms() {
  const char* v = getenv("NVFP4_BENCH_WARM_FIRST_MS");
  return v && *v ? atof(v) : 300.0;
}

__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

struct Timer {
  cudaStream_t stream;
  cudaEvent_t start, end;
  int replays;
  long long spin_cycles = 0;
  bool fresh_shape = false;  // the next measurement is the first after a shape's setup: warm_first_ms()
  void new_shape() { fresh_shape = true; }
  Timer(int replays_) : replays(replays_) {
    CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CK(cudaEventCreate(&start));
    CK(cudaEventCreate(&end));
    // SM cycles per microsecond, measured (the clock under load is not the nominal one)
    const long long probe = 2000000;
    spin_kernel<<<1, 1, 0, stream>>>(probe);
    CK(cudaEventRecord(start, stream));
    spin_kernel<<<1, 1, 0, stream>>>(probe);
    CK(cudaEventRecord(end, stream));
    CK(cudaEventSynchronize(end));
    float ms = 0.f;
    CK(cudaEventElapsedTime(&ms, start, end));
    spin_cycles = (long long)(spin_us() * (double)probe / (ms * 1000.0));
  }
  double graph_us(const std::function<void(int copy, cudaStream_t)>& call, int copies, int calls) {
    for (int i = 0; i < copies; ++i) call(i, stream);  // warm-up (lazy module loading, first-touch)
    CK(cudaStreamSynchronize(stream));
    cudaGraph_t graph;
    CK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; ++i) call(i % copies, stream);
    CK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    CK(cudaGraphInstantiate(&exec, graph, 0));
    CK(cudaEventRecord(start, stream));
    CK(cudaGraphLaunch(exec, stream));
    CK(cudaEventRecord(end, stream));
    CK(cudaEventSynchronize(end));
    float first_ms = 0.f;
    CK(cudaEventElapsedTime(&first_ms, start, end));
    const int warm = (int)std::min(10000.0, (fresh_shape ? warm_first_ms() : warm_ms()) / std::max((double)first_ms, 1e-3));
    fresh_shape = false;
    for (int w = 0; w < warm; ++w) CK(cudaGraphLaunch(exec, stream));
    CK(cudaStreamSynchronize(stream));
    // Best of the timed replays once settled: `replays` in a row that do not lower it by more than kSettle, at most
    // kMaxReplays (bench/timing.py's settled_best, which says why).
    constexpr double kSettle = 0.005;
    constexpr int kMaxReplays = 100;
    double best = INFINITY;
    for (int r = 0, since_improved = 0; r < kMaxReplays && since_improved < replays; ++r) {
      if (spin_cycles > 0) spin_kernel<<<1, 1, 0, stream>>>(spin_cycles);
      CK(cudaEventRecord(start, stream));
      CK(cudaGraphLaunch(exec, stream));
      CK(cudaEventRecord(end, stream));
      CK(cudaEventSynchronize(end));
      float ms = 0.f;
      CK(cudaEventElapsedTime(&ms, start, end));
      const double us = (double)ms * 1000.0 / calls;
      since_improved = us < best * (1.0 - kSettle) ? 0 : since_improved + 1;
      best = std::min(best, us);
    }
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    return best;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------------------------
struct Row {
  Shape shape;
  int64_t M;
  std::string series;  // e.g. sm90_invariant, sm90_fast, sm90_invariant_layer, quantize_dequant, cublas_bf16
  std::string kind;    // "gemm" (GEMM alone on quantized activations), "layer" (quantizer + GEMM), "quantizer", "peer"
  std::string config;  // Blackwell: CUTLASS configuration name; else ""
  double us;
  double tflops;
  double weight_gbps;
  double floor_fraction;  // NVFP4 weight-read floor / time (GEMM and layer series)
  int copies, calls;
  std::string invariance;  // "ok", "FAIL", "" (not checked)
};

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if ((unsigned char)c < 0x20) { o += ' '; continue; }
    o += c;
  }
  return o;
}

struct Options {
  std::vector<Shape> shapes;
  std::vector<int64_t> ms = presets_table().m;
  bool quick = false, cublas = true;
  int calls = 20, replays = 5;
  double flush_mb = 200;
  std::string out = ".", tag;
  int sm90_split_reduce = 0;  // NVFP4_SM90_REDUCE_*: 0 = the library's automatic choice
};

void usage() {
  printf(
      "usage: nvfp4_bench [--preset NAME[,NAME...]|all] [--shape NxK[,NxK...]] [--m M[,M...]] [--quick]\n"
      "                   [--calls N] [--replays N] [--flush-mb MB] [--no-cublas] [--out DIR] [--tag NAME]\n"
      "                   [--sm90-split-reduce auto|cluster|kernel] [--list-presets]\n"
      "presets: llama-3.1-8b llama-3.1-70b qwen3-32b deepseek-v3 (default: all four)\n"
      "--quick: llama-3.1-8b qkv_proj and o_proj, M in {1, 16, 256}, 10 calls per graph (the ctest smoke test)\n"
      "--sm90-split-reduce: how Hopper split-K calls add their chunk sums (same bits; default auto)\n"
      "exit: 0 ok, 1 invariance failure / error, 2 bad arguments, 3 no kernel for this GPU, 77 no CUDA GPU\n");
}

Options parse(int argc, char** argv) {
  Options o;
  std::vector<std::string> presets;
  std::vector<Shape> custom;
  bool have_m = false, have_calls = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(kExitArgs, "%s needs a value", a.c_str());
      return argv[++i];
    };
    if (a == "-h" || a == "--help") { usage(); exit(0); }
    else if (a == "--list-presets") {
      for (const Shape& s : all_presets())
        printf("%-14s %-14s N=%-6lld K=%lld\n", s.preset.c_str(), s.name.c_str(), (long long)s.N, (long long)s.K);
      exit(0);
    } else if (a == "--preset") {
      for (auto& p : split(value(), ',')) presets.push_back(p);
    } else if (a == "--shape") {
      for (auto& s : split(value(), ',')) {
        auto x = s.find_first_of("xX");
        if (x == std::string::npos) die(kExitArgs, "--shape: '%s' is not NxK", s.c_str());
        int64_t n = parse_int(s.substr(0, x), "--shape N"), k = parse_int(s.substr(x + 1), "--shape K");
        if (k % 16) die(kExitArgs, "--shape %s: K must be a multiple of 16", s.c_str());
        custom.push_back({"custom", s, n, k});
      }
    } else if (a == "--m") {
      o.ms.clear();
      for (auto& m : split(value(), ',')) o.ms.push_back(parse_int(m, "--m"));
      have_m = true;
    } else if (a == "--quick") o.quick = true;
    else if (a == "--calls") { o.calls = (int)parse_int(value(), "--calls"); have_calls = true; }
    else if (a == "--replays") o.replays = (int)parse_int(value(), "--replays");
    else if (a == "--flush-mb") o.flush_mb = (double)parse_int(value(), "--flush-mb");
    else if (a == "--no-cublas") o.cublas = false;
    else if (a == "--out") o.out = value();
    else if (a == "--tag") o.tag = value();
    else if (a == "--sm90-split-reduce") {
      const std::string v = value();
      if (v == "auto") o.sm90_split_reduce = 0;
      else if (v == "cluster") o.sm90_split_reduce = NVFP4_SM90_REDUCE_CLUSTER;
      else if (v == "kernel") o.sm90_split_reduce = NVFP4_SM90_REDUCE_KERNEL;
      else die(kExitArgs, "--sm90-split-reduce: '%s' is not auto, cluster or kernel", v.c_str());
    }
    else { usage(); die(kExitArgs, "unknown argument '%s'", a.c_str()); }
  }
  if (o.quick) {
    if (presets.empty() && custom.empty()) {
      o.shapes = {all_presets()[0], all_presets()[1]};
    }
    if (!have_m) o.ms = presets_table().quick_m;
    if (!have_calls) o.calls = 10;
  }
  if (presets.empty() && custom.empty() && o.shapes.empty()) presets = {"all"};
  for (auto& p : presets) {
    bool found = false;
    for (const Shape& s : all_presets())
      if (p == "all" || s.preset == p) { o.shapes.push_back(s); found = true; }
    if (!found) die(kExitArgs, "unknown preset '%s' (llama-3.1-8b, llama-3.1-70b, qwen3-32b, deepseek-v3, all)", p.c_str());
  }
  for (auto& s : custom) o.shapes.push_back(s);
  if (o.ms.empty()) die(kExitArgs, "--m: empty list");
  return o;
}

std::string iso_date() {
  time_t t = time(nullptr);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d", gmtime(&t));
  return buf;
}

// The first line of a stream, without its line end and trailing blanks ("" when there is none).
std::string first_line(FILE* f) {
  std::string out;
  char buf[256];
  if (fgets(buf, sizeof buf, f)) out = buf;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string shell_line(const char* cmd) {
  std::string out;
  if (FILE* f = popen(cmd, "r")) {
    out = first_line(f);
    pclose(f);
  }
  return out;
}

// The commit the measured code comes from, in bench/timing.py's order: $NVFP4_COMMIT, else a COMMIT file in the
// working directory (a device snapshot, tools/snapshot_for_device.sh), else `git rev-parse`, else "unknown".
std::string source_commit() {
  if (const char* v = getenv("NVFP4_COMMIT"); v && *v) return v;
  if (FILE* f = fopen("COMMIT", "r")) {
    const std::string c = first_line(f);
    fclose(f);
    if (!c.empty()) return c;
  }
  const std::string c = shell_line("git rev-parse --short HEAD 2>/dev/null");
  return c.empty() ? "unknown" : c;
}

int copies_for(size_t bytes_per_copy, double flush_bytes) {
  return (int)std::max<double>(1, std::min<double>(64, std::ceil(flush_bytes / (double)bytes_per_copy)));
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse(argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);

  // ---- can this machine run anything? -------------------------------------------------------------------------
  if (nvfp4_abi_version() != NVFP4_ABI_VERSION)
    die(1, "library ABI version %d, this bench was built for %d", nvfp4_abi_version(), NVFP4_ABI_VERSION);
  int compiled[8] = {0};
  const int ncompiled = std::min(nvfp4_compiled_archs(compiled, 8), 8);
  std::string compiled_list;
  for (int i = 0; i < ncompiled; ++i) compiled_list += (i ? "," : "") + std::to_string(compiled[i]);

  int ndev = 0;
  cudaError_t derr = cudaGetDeviceCount(&ndev);
  if (derr != cudaSuccess || ndev == 0) {
    fprintf(stderr,
            "nvfp4_bench: no CUDA GPU available (cudaGetDeviceCount: %s, %d devices); the benchmark needs an NVIDIA "
            "GPU with compute capability 9.0, 10.0 or 12.0 (library built for sm %s). Nothing was measured.\n",
            derr == cudaSuccess ? "no error" : cudaGetErrorString(derr), ndev, compiled_list.c_str());
    return kExitNoGpu;
  }
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  const int sm = prop.major * 10 + prop.minor;

  std::vector<Family> fams;
  auto compiled_has = [&](int s) { return std::find(compiled, compiled + ncompiled, s) != compiled + ncompiled; };
  if (sm == 90 && compiled_has(90)) {
    Family f;
    f.name = "sm90"; f.sm = 90;
    f.sm90 = lookup<Sm90Linear>("nvfp4_sm90_linear");
    f.sm90_ws = lookup<Sm90Ws>("nvfp4_sm90_linear_workspace_size");
    f.sm90_plan = lookup<Sm90Plan>("nvfp4_sm90_linear_plan");
    f.sm90_bytes = lookup<Sm90Bytes>("nvfp4_sm90_prepacked_bytes");
    if (auto set_reduce = lookup<Sm90SetReduce>("nvfp4_sm90_set_split_reduce"))
      if (set_reduce(opt.sm90_split_reduce) != NVFP4_OK) die(kExitArgs, "%s", nvfp4_last_error());
    if (f.sm90 && f.sm90_ws && f.sm90_plan && f.sm90_bytes) fams.push_back(f);
  }
  for (int bsm : {100, 120}) {
    if (sm != bsm || !compiled_has(bsm)) continue;
    Family f;
    f.name = "sm" + std::to_string(bsm); f.sm = bsm; f.nvfp4_act = true;
    f.bw = lookup<BwGemm>(("nvfp4_" + f.name + "_gemm").c_str());
    f.bw_ws = lookup<BwWs>(("nvfp4_" + f.name + "_gemm_workspace_size").c_str());
    f.bw_name = lookup<BwName>(("nvfp4_" + f.name + "_config_name").c_str());
    if (f.bw && f.bw_ws && f.bw_name) fams.push_back(f);
  }
  if (fams.empty())
    die(kExitNoKernels,
        "no GEMM of the library serves this GPU: %s is sm_%d, the library holds device code for sm %s (sm_90a GEMM runs "
        "on CC 9.0, sm_100a on 10.0, sm_120a on 12.0). Rebuild with NVFP4_CUDA_ARCHS including %da.",
        prop.name, sm, compiled_list.empty() ? "(none)" : compiled_list.c_str(), sm);
  {
    cudaFuncAttributes attr;
    cudaError_t e = cudaFuncGetAttributes(&attr, fill_bytes_kernel);
    if (e != cudaSuccess)
      die(kExitNoKernels, "this nvfp4_bench executable has no device code for %s (sm_%d): %s", prop.name, sm,
          cudaGetErrorString(e));
  }

  int runtime_version = 0, driver_api = 0;
  cudaRuntimeGetVersion(&runtime_version);
  cudaDriverGetVersion(&driver_api);
  const std::string driver = shell_line("nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null");
  printf("nvfp4_bench: %s (sm_%d, %d SMs, %d MB L2), library sm {%s}, families:", prop.name, sm,
         prop.multiProcessorCount, prop.l2CacheSize >> 20, compiled_list.c_str());
  for (auto& f : fams) printf(" %s", f.name.c_str());
  printf("\n");

  Timer timer(opt.replays);
  cudaStream_t st = timer.stream;
  const double flush_bytes = opt.flush_mb * (1 << 20);

  // ---- read bandwidth (for the weight-read floor) -------------------------------------------------------------
  double read_bytes_per_us;
  {
    const size_t bytes = (size_t)2 << 30;
    DevBuf buf(bytes), sink(4);
    fill_f32_kernel<<<kGrid, kBlock, 0, st>>>(buf.as<float>(), bytes / 4, 1.0f);
    CK(cudaGetLastError());
    const int grid = prop.multiProcessorCount * 8;
    double us = timer.graph_us([&](int, cudaStream_t s) {
      read_kernel<<<grid, 512, 0, s>>>(buf.as<const float4>(), bytes / 16, sink.as<float>());
    }, 1, 5);
    read_bytes_per_us = bytes / us;
    printf("read bandwidth: %.2f TB/s\n", read_bytes_per_us / 1e6);
  }

#ifdef NVFP4_BENCH_HAS_CUBLAS
  cublasHandle_t cublas = nullptr;
  DevBuf cublas_ws;
  if (opt.cublas) {
    if (cublasCreate(&cublas) != CUBLAS_STATUS_SUCCESS) die(1, "cublasCreate failed");
    cublas_ws.alloc(64 << 20);
    cublasSetWorkspace(cublas, cublas_ws.p, cublas_ws.bytes);  // no allocation inside graph capture
    cublasSetStream(cublas, st);
  }
#else
  if (opt.cublas) printf("cuBLAS baseline: not built (CUDA::cublas was not found at configure time)\n");
  opt.cublas = false;
#endif

  std::vector<Row> rows;
  int failures = 0;
  DevBuf workspace;
  DevBuf wgs(sizeof(float));  // weight global scale (weight_scale_2)
  fill_f32_kernel<<<1, 1, 0, st>>>(wgs.as<float>(), 1, 0.75f);
  CK(cudaGetLastError());

  for (const Shape& shape : opt.shapes) {
    const int64_t N = shape.N, K = shape.K;
    const size_t wbytes = nvfp4_weight_bytes(N, K);
    const int copies = copies_for(wbytes, flush_bytes);
    const size_t sbytes = swizzled_scale_bytes(N, K);
    std::vector<DevBuf> wq, ws;  // sm90: the runtime layout in wq (scales inside); others: packed + swizzled scales
    const bool prepacked = !fams.empty() && fams[0].sm90_bytes != nullptr;
    for (int c = 0; c < copies; ++c) {
      if (prepacked) {
        size_t pbytes = 0;
        NV(fams[0].sm90_bytes(N, K, &pbytes));
        wq.emplace_back(pbytes);
        ws.emplace_back(16);
        fill_prepacked_kernel<<<kGrid, kBlock, 0, st>>>(wq.back().as<uint8_t>(), pbytes, 1000 + c);
      } else {
        wq.emplace_back((size_t)N * K / 2);
        ws.emplace_back(sbytes);
        fill_bytes_kernel<<<kGrid, kBlock, 0, st>>>(wq.back().as<uint8_t>(), wq.back().bytes, 1000 + c);
        CK(cudaMemsetAsync(ws.back().p, 0, sbytes, st));
        fill_scales_kernel<<<kGrid, kBlock, 0, st>>>(ws.back().as<uint8_t>(), N, K / 16, 2000 + c);
      }
      CK(cudaGetLastError());
    }
    DevBuf bias((size_t)N * 2);
    fill_bf16_kernel<<<kGrid, kBlock, 0, st>>>(bias.as<__nv_bfloat16>(), N, 3000, 1.0f);
    CK(cudaGetLastError());
    const int bf16_copies = copies_for((size_t)N * K * 2, flush_bytes);
    std::vector<DevBuf> wbf16;
    if (opt.cublas)
      for (int c = 0; c < bf16_copies; ++c) {
        wbf16.emplace_back((size_t)N * K * 2);
        fill_bf16_kernel<<<kGrid, kBlock, 0, st>>>(wbf16.back().as<__nv_bfloat16>(), (size_t)N * K, 4000 + c, 0.05f);
        CK(cudaGetLastError());
      }
    CK(cudaStreamSynchronize(st));
    timer.new_shape();

    for (int64_t M : opt.ms) {
      const int calls = std::max(opt.calls, copies);
      DevBuf x((size_t)M * K * 2), act_dq((size_t)M * K * 2), act_q((size_t)M * K / 2),
          act_s(swizzled_scale_bytes(M, K)), alpha((size_t)M * 4), out((size_t)M * N * 2);
      fill_activations_kernel<<<kGrid, kBlock, 0, st>>>(x.as<__nv_bfloat16>(), M, K, 5000 + M);
      CK(cudaGetLastError());
      // probe buffers: one row quantized and multiplied alone
      DevBuf p_dq(K * 2), p_q(K / 2), p_s(swizzled_scale_bytes(1, K)), p_alpha(4), p_out(N * 2);
      std::vector<uint16_t> h_row(N), h_probe(N);
      const double flops = 2.0 * M * N * K;
      std::map<std::string, double> line;  // series -> us, for the printed table
      std::string line_note;

      auto add = [&](const std::string& series, const std::string& kind, const std::string& config, double us,
                     int cps, int cls, const std::string& inv, bool nvfp4_weights) {
        Row r{shape, M, series, kind, config, us, flops / us / 1e6, 0, 0, cps, cls, inv};
        const double b = nvfp4_weights ? (double)wbytes : (double)N * K * 2;
        if (kind == "quantizer") r.tflops = 0;
        else r.weight_gbps = b / us / 1e3;
        if (kind != "quantizer" && nvfp4_weights) r.floor_fraction = (b / read_bytes_per_us) / us;
        rows.push_back(r);
        line[series] = us;
      };

      // quantizers (activations are not rotated: they are the per-call input)
      auto quant_dq = [&](const void* src, int64_t rows_, void* dq, float* al, cudaStream_t s) {
        NV(nvfp4_quantize_activations(src, NVFP4_DTYPE_BF16, rows_, K, K, nullptr, al, wgs.as<float>(), nullptr,
                                      nullptr, dq, s));
      };
      auto quant_fp4 = [&](const void* src, int64_t rows_, uint8_t* q, uint8_t* sc, float* al, cudaStream_t s) {
        NV(nvfp4_quantize_activations(src, NVFP4_DTYPE_BF16, rows_, K, K, nullptr, al, wgs.as<float>(), q, sc,
                                      nullptr, s));
      };

      for (const Family& f : fams) {
        if (f.nvfp4_act && (K % 32 || N % 8)) {
          line_note += " [" + f.name + ": needs K%32==0 and N%8==0]";
          continue;
        }
        // the GEMM on already quantized activations: act is M rows at `a`, alpha per row
        auto gemm = [&](int inv, int64_t m, const void* a_dq, const uint8_t* a_q, const uint8_t* a_s, const float* al,
                        int c, void* o, cudaStream_t s) {
          size_t need = 0;
          if (f.nvfp4_act) {
            NV(f.bw_ws(m, N, K, inv, &need));
            workspace.ensure(need);  // sized before capture by the warm-up calls
            NV(f.bw(a_q, a_s, m, N, K, wq[c].as<uint8_t>(), ws[c].as<uint8_t>(), al, 1, bias.p, o, NVFP4_DTYPE_BF16,
                    N, inv, need ? workspace.p : nullptr, need, s));
          } else {
            NV(f.sm90_ws(m, N, K, NVFP4_SM90_ACT_BF16, inv, 0, 0, &need));
            workspace.ensure(need);
            NV(f.sm90(a_dq, NVFP4_DTYPE_BF16, K, NVFP4_SM90_ACT_BF16, nullptr, al, 1, m, N, K, wq[c].as<uint8_t>(),
                      bias.p, o, N, inv, 0, nullptr, need ? workspace.p : nullptr, need, s));
          }
        };
        // sm90: the whole layer (per-token W4A4 activations quantized inside the call) in one C call
        auto layer_sm90 = [&](int inv, int c, cudaStream_t s) {
          size_t need = 0;
          NV(f.sm90_ws(M, N, K, NVFP4_SM90_ACT_QUANT_PER_TOKEN, inv, 0, 0, &need));
          workspace.ensure(need);
          NV(f.sm90(x.p, NVFP4_DTYPE_BF16, K, NVFP4_SM90_ACT_QUANT_PER_TOKEN, nullptr, wgs.as<float>(), 0, M, N, K,
                    wq[c].as<uint8_t>(), bias.p, out.p, N, inv, 0, nullptr, need ? workspace.p : nullptr, need, s));
        };
        auto quant = [&](const void* src, int64_t m, void* dq, uint8_t* q, uint8_t* sc, float* al, cudaStream_t s) {
          if (f.nvfp4_act) quant_fp4(src, m, q, sc, al, s);
          else quant_dq(src, m, dq, al, s);
        };
        // size the workspace for both modes and for M = 1 before any capture (no allocation while capturing)
        for (int inv : {0, 1})
          for (int64_t m : {M, (int64_t)1}) {
            size_t need = 0;
            if (f.nvfp4_act) {
              NV(f.bw_ws(m, N, K, inv, &need));
            } else {
              NV(f.sm90_ws(m, N, K, NVFP4_SM90_ACT_BF16, inv, 0, 0, &need));
              workspace.ensure(need);
              NV(f.sm90_ws(m, N, K, NVFP4_SM90_ACT_QUANT_PER_TOKEN, inv, 0, 0, &need));
            }
            workspace.ensure(need);
          }

        const std::string qname = f.nvfp4_act ? "quantize_nvfp4" : "quantize_dequant";
        if (!line.count(qname)) {
          double t = timer.graph_us([&](int, cudaStream_t s) {
            quant(x.p, M, act_dq.p, act_q.as<uint8_t>(), act_s.as<uint8_t>(), alpha.as<float>(), s);
          }, 1, opt.calls);
          add(qname, "quantizer", "", t, 1, opt.calls, "", true);
        }
        quant(x.p, M, act_dq.p, act_q.as<uint8_t>(), act_s.as<uint8_t>(), alpha.as<float>(), st);

        for (int inv : {1, 0}) {
          const std::string mode = inv ? "invariant" : "fast";
          std::string config;
          if (f.nvfp4_act) {
            char buf[128] = {0};
            if (f.bw_name(M, N, K, inv, buf, sizeof buf) > 0) config = buf;
          } else if (f.sm90_plan) {
            static const char* const kReduce[] = {"", "/cluster", "/kernel"};
            int bt = 0, kc = 0, chunks = 0, splits = 0, reduce = 0, fused = 0;
            NV(f.sm90_plan(M, N, K, NVFP4_SM90_ACT_QUANT_PER_TOKEN, inv, 0, &bt, &kc, &chunks, &splits, &reduce, &fused));
            config = "bt" + std::to_string(bt) + "/kc" + std::to_string(kc) + "/c" + std::to_string(chunks) + "/s" +
                     std::to_string(splits) + kReduce[reduce >= 0 && reduce <= 2 ? reduce : 0] + (fused ? "/fused" : "");
          }
          std::string inv_result;
          if (inv) {  // invariance probe, outside any graph
            gemm(1, M, act_dq.p, act_q.as<uint8_t>(), act_s.as<uint8_t>(), alpha.as<float>(), 0, out.p, st);
            inv_result = "ok";
            std::vector<int64_t> probe_rows = {0, M / 2, M - 1};
            std::sort(probe_rows.begin(), probe_rows.end());
            probe_rows.erase(std::unique(probe_rows.begin(), probe_rows.end()), probe_rows.end());
            for (int64_t r : probe_rows) {
              const void* xr = x.as<__nv_bfloat16>() + r * K;
              quant(xr, 1, p_dq.p, p_q.as<uint8_t>(), p_s.as<uint8_t>(), p_alpha.as<float>(), st);
              gemm(1, 1, p_dq.p, p_q.as<uint8_t>(), p_s.as<uint8_t>(), p_alpha.as<float>(), 0, p_out.p, st);
              CK(cudaMemcpyAsync(h_row.data(), out.as<uint16_t>() + r * N, N * 2, cudaMemcpyDeviceToHost, st));
              CK(cudaMemcpyAsync(h_probe.data(), p_out.p, N * 2, cudaMemcpyDeviceToHost, st));
              CK(cudaStreamSynchronize(st));
              if (memcmp(h_row.data(), h_probe.data(), N * 2) != 0) {
                int64_t first = 0;
                while (first < N && h_row[first] == h_probe[first]) ++first;
                fprintf(stderr,
                        "nvfp4_bench: INVARIANCE FAILURE %s N=%lld K=%lld M=%lld row %lld: first differing column "
                        "%lld (0x%04x in the M-row call vs 0x%04x alone)\n",
                        f.name.c_str(), (long long)N, (long long)K, (long long)M, (long long)r, (long long)first,
                        h_row[first], h_probe[first]);
                inv_result = "FAIL";
                ++failures;
              }
            }
          }
          double t_gemm = timer.graph_us([&](int c, cudaStream_t s) {
            gemm(inv, M, act_dq.p, act_q.as<uint8_t>(), act_s.as<uint8_t>(), alpha.as<float>(), c, out.p, s);
          }, copies, calls);
          add(f.name + "_" + mode, "gemm", config, t_gemm, copies, calls, inv_result, true);
          double t_layer = timer.graph_us([&](int c, cudaStream_t s) {
            if (!f.nvfp4_act) {
              layer_sm90(inv, c, s);
              return;
            }
            quant(x.p, M, act_dq.p, act_q.as<uint8_t>(), act_s.as<uint8_t>(), alpha.as<float>(), s);
            gemm(inv, M, act_dq.p, act_q.as<uint8_t>(), act_s.as<uint8_t>(), alpha.as<float>(), c, out.p, s);
          }, copies, calls);
          add(f.name + "_" + mode + "_layer", "layer", config, t_layer, copies, calls, "", true);
          if (!config.empty()) line_note += " " + mode + "=" + config;
        }
      }

#ifdef NVFP4_BENCH_HAS_CUBLAS
      if (opt.cublas) {
        const int cls = std::max(opt.calls, bf16_copies);
        const float one = 1.f, zero = 0.f;
        // row-major out[M,N] = x[M,K] W[N,K]^T  ==  column-major out^T[N,M] = W^T(op T of a KxN) x^T
        double t = timer.graph_us([&](int c, cudaStream_t s) {
          cublasStatus_t cs = cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, wbf16[c].p,
                                           CUDA_R_16BF, (int)K, x.p, CUDA_R_16BF, (int)K, &zero, out.p, CUDA_R_16BF,
                                           (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
          if (cs != CUBLAS_STATUS_SUCCESS) die(1, "cublasGemmEx failed (status %d)", (int)cs);
        }, bf16_copies, cls);
        add("cublas_bf16", "peer", "", t, bf16_copies, cls, "", false);
      }
#endif

      // one table line per (shape, M)
      printf("%-14s %-14s N=%6lld K=%6lld M=%5lld", shape.preset.c_str(), shape.name.c_str(), (long long)N,
             (long long)K, (long long)M);
      for (auto& kv : line) printf("  %s %.2f", kv.first.c_str(), kv.second);
      for (const Family& f : fams) {
        auto inv = line.find(f.name + "_invariant");
        if (inv == line.end()) continue;
        printf("  | %s inv %.1f TF/s", f.name.c_str(), flops / inv->second / 1e6);
        auto fast = line.find(f.name + "_fast");
        if (fast != line.end()) printf(" inv/fast %.3f", inv->second / fast->second);
        auto cb = line.find("cublas_bf16");
        if (cb != line.end()) printf(" x%.2f vs cuBLAS", cb->second / inv->second);
      }
      for (auto& r : rows)
        if (r.M == M && r.shape.N == N && r.shape.K == K && r.shape.name == shape.name && !r.invariance.empty())
          printf("  invariance %s", r.invariance.c_str());
      printf("%s  (us)\n", line_note.c_str());
    }
  }

  // ---- JSON and CSV -------------------------------------------------------------------------------------------
  mkdir(opt.out.c_str(), 0777);
  std::string gpu = prop.name;
  std::replace(gpu.begin(), gpu.end(), ' ', '-');
  std::replace(gpu.begin(), gpu.end(), '/', '-');
  const std::string date = iso_date();
  std::string stem = opt.out + "/nvfp4_bench-" + gpu + "-" + date + (opt.quick ? "-quick" : "") +
                     (opt.tag.empty() ? "" : "-" + opt.tag);
  FILE* j = fopen((stem + ".json").c_str(), "w");
  FILE* c = fopen((stem + ".csv").c_str(), "w");
  if (!j || !c) die(1, "cannot write %s.json / .csv", stem.c_str());
  fprintf(j, "{\n \"tool\": \"nvfp4_bench\",\n \"date\": \"%s\",\n \"gpu\": \"%s\",\n \"sm\": %d,\n \"sms\": %d,\n",
          date.c_str(), json_escape(prop.name).c_str(), sm, prop.multiProcessorCount);
  fprintf(j, " \"commit\": \"%s\",\n", json_escape(source_commit()).c_str());
  fprintf(j, " \"l2_bytes\": %d,\n \"driver\": \"%s\",\n \"cuda_driver_api\": %d,\n \"cuda_runtime\": %d,\n",
          prop.l2CacheSize, json_escape(driver).c_str(), driver_api, runtime_version);
  fprintf(j, " \"abi_version\": %d,\n \"library_archs\": [%s],\n \"families\": [", nvfp4_abi_version(),
          compiled_list.c_str());
  for (size_t i = 0; i < fams.size(); ++i) fprintf(j, "%s\"%s\"", i ? ", " : "", fams[i].name.c_str());
  fprintf(j, "],\n \"read_bandwidth_TBps\": %.3f,\n \"flush_bytes\": %.0f,\n \"calls\": %d,\n \"replays\": %d,\n \"spin_us\": %.1f,\n \"warm_ms\": %.1f,\n \"warm_first_ms\": %.1f,\n",
          read_bytes_per_us / 1e6, flush_bytes, opt.calls, opt.replays, spin_us(), warm_ms(), warm_first_ms());
  fprintf(j,
          " \"method\": \"CUDA-graph replay of back-to-back calls cycling weight copies (>= flush_bytes in all), a "
          "busy-wait kernel before the start event, after warm_ms of untimed replays (warm_first_ms for a shape's first measurement), best of the replays once `replays` in a row gave no new best (0.5%%); per-token W4A4 activations, bf16 out, with bias, alpha per row\",\n");
  fprintf(j, " \"invariance_failures\": %d,\n \"results\": [\n", failures);
  fprintf(c, "preset,shape,N,K,M,series,kind,config,us,tflops,weight_GBps,fraction_of_bw_floor,copies,calls,invariance\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    fprintf(j,
            "  {\"preset\": \"%s\", \"shape\": \"%s\", \"N\": %lld, \"K\": %lld, \"M\": %lld, \"series\": \"%s\", "
            "\"kind\": \"%s\", \"config\": \"%s\", \"us\": %.3f, \"tflops\": %.2f, \"weight_GBps\": %.1f, "
            "\"fraction_of_bw_floor\": %.4f, \"copies\": %d, \"calls\": %d, \"invariance\": \"%s\"}%s\n",
            r.shape.preset.c_str(), json_escape(r.shape.name).c_str(), (long long)r.shape.N, (long long)r.shape.K,
            (long long)r.M, r.series.c_str(), r.kind.c_str(), json_escape(r.config).c_str(), r.us, r.tflops,
            r.weight_gbps, r.floor_fraction, r.copies, r.calls, r.invariance.c_str(), i + 1 < rows.size() ? "," : "");
    fprintf(c, "%s,%s,%lld,%lld,%lld,%s,%s,%s,%.3f,%.2f,%.1f,%.4f,%d,%d,%s\n", r.shape.preset.c_str(),
            r.shape.name.c_str(), (long long)r.shape.N, (long long)r.shape.K, (long long)r.M, r.series.c_str(),
            r.kind.c_str(), r.config.c_str(), r.us, r.tflops, r.weight_gbps, r.floor_fraction, r.copies, r.calls,
            r.invariance.c_str());
  }
  fprintf(j, " ]\n}\n");
  fclose(j);
  fclose(c);
  printf("wrote %s.json and %s.csv\n", stem.c_str(), stem.c_str());

#ifdef NVFP4_BENCH_HAS_CUBLAS
  if (cublas) cublasDestroy(cublas);
#endif
  if (failures) {
    fprintf(stderr, "nvfp4_bench: %d INVARIANCE FAILURE(S) (see above)\n", failures);
    return kExitInvariance;
  }
  return 0;
}
