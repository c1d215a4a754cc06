// apps/zerotrain/bench_optim.cpp: speed of the CPU optimizer step (zerotrain's AdamW over one flat
// fp32 span) next to the machine's memory floor measured in the same run (`zerotrain bench optim`,
// and apps/bench_optim.cpp, a wrapper over the same code; bench/optim_vs_torch.sh reads its JSON).
//  - copy_bw: a memcpy stream of large buffers (src and dst of --copy-mib MiB each, far beyond
//    the L3) with the same thread count, each thread copying its own static slice (glibc's memcpy
//    uses non-temporal stores at these sizes, so no read-for-ownership): bytes read + written per
//    second. Measured before and after the Adam runs; the median of all repetitions is the floor
//    (the "before" and "after" medians are printed too, so a change of machine load shows).
//    Also rmw_gbps: an in-place x *= s stream (each line read and written back, no
//    read-for-ownership either), Adam's own access pattern. On the Zen 4 VM this was written on,
//    memcpy reaches only ~60% of it (its non-temporal stores are slow there), so Adam's fraction
//    of the memcpy floor exceeds 1 while its fraction of rmw_gbps is the tighter figure.
//  - adam: one AdamW step (wd 0.01, one decayed segment) per size: median seconds per step,
//    parameters/s, and bytes/s = 28 bytes/param (p, g, m, v read: 16; p, m, v written: 12) / copy
//    bandwidth = the fraction of the memory floor reached (and of rmw_gbps). Sizes whose 16
//    bytes/param fit in the L3 (1M: 16 MB < 32 MB here) can beat the floor: they run from cache.
//  - adam_checksum: FNV-1a over p, m and v after 3 steps on an odd size with two segments (a tail
//    and a no-decay run): equal across thread counts and across versions of optim/adam.cpp that
//    keep the same bits (bench/optim_vs_torch.sh compares 1 and 2 threads).
// p and g are 64-byte aligned like zerotrain's tensors (core/allocator.h); m and v are the
// optimizer's own std::vectors. Pages are first touched by the threads that use them.
#include "apps/zerotrain/bench_optim.h"

#include "apps/zerotrain/bench_common.h"
#include "core/error.h"
#include "optim/optimizer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace zt::app {
namespace {

using Clock = std::chrono::steady_clock;
using bench::median;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

// 64-byte aligned, first touched in parallel with the static split the kernels use.
Buffer make_buffer(int64_t n, float (*value)(int64_t)) {
  size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
  Buffer b(static_cast<float*>(std::aligned_alloc(64, bytes)));
  ZT_CHECK(b != nullptr, "bench optim: out of memory allocating ", bytes, " bytes");
  float* p = b.get();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = value(i);
  return b;
}

// Deterministic pseudo-random values in [-1, 1) from the index (no RNG state to share).
float hash_unit(int64_t i) {
  uint64_t x = static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 32;
  return static_cast<float>(x >> 40) / static_cast<float>(1 << 23) - 1.f;
}
float param_value(int64_t i) { return hash_unit(i); }
float grad_value(int64_t i) { return 0.01f * hash_unit(i + (int64_t{1} << 40)); }

// Memory-stream references, each thread on its own static slice of `bytes`-sized buffers; one
// value per rep, in (bytes read + bytes written) per second:
//   memcpy: dst = src (glibc uses non-temporal stores at these sizes: no read-for-ownership);
//   rmw:    x = x * s in place (read and write back the same lines: the pattern of Adam's p, m, v).
struct StreamBw {
  std::vector<double> memcpy_bw, rmw_bw;
};
volatile float g_scale = 1.0000001f;  // volatile: the compiler cannot drop x * s
volatile float g_sink = 0;

StreamBw stream_bandwidth(size_t bytes, int reps) {
  int64_t n = static_cast<int64_t>(bytes / sizeof(float));
  Buffer src = make_buffer(n, param_value);
  Buffer dst = make_buffer(n, grad_value);
  const double moved = 2.0 * static_cast<double>(n) * sizeof(float);
  StreamBw bw;
  for (int r = 0; r < reps + 1; ++r) {  // rep 0: warm-up
    auto t0 = Clock::now();
#pragma omp parallel
    {
      int nt = omp_get_num_threads(), id = omp_get_thread_num();
      int64_t lo = n * id / nt, hi = n * (id + 1) / nt;
      std::memcpy(dst.get() + lo, src.get() + lo, static_cast<size_t>(hi - lo) * sizeof(float));
    }
    double t = seconds_since(t0);
    const float s = g_scale;
    float* x = src.get();
    auto t1 = Clock::now();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
    double t_rmw = seconds_since(t1);
    if (r > 0) {
      bw.memcpy_bw.push_back(moved / t);
      bw.rmw_bw.push_back(moved / t_rmw);
    }
  }
  g_sink = dst[n / 3];  // keep the copies alive
  return bw;
}

uint64_t fnv1a(const float* x, int64_t n, uint64_t h) {
  const auto* b = reinterpret_cast<const unsigned char*>(x);
  for (int64_t i = 0; i < n * static_cast<int64_t>(sizeof(float)); ++i) {
    h ^= b[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

// p, m, v after 3 steps of AdamW on n = 1'000'003 (not a multiple of any vector width or chunk)
// with a decayed run then a no-decay run that starts mid-chunk.
uint64_t adam_checksum() {
  const int64_t n = 1'000'003, cut = 600'001;
  Buffer p = make_buffer(n, param_value), g = make_buffer(n, grad_value);
  optim::AdamParams ap;
  ap.weight_decay = 0.1f;
  auto opt = optim::make_adam(ap);
  opt->init(n);
  std::vector<optim::Segment> segs = {{0, cut, true}, {cut, n - cut, false}};
  for (int t = 1; t <= 3; ++t) opt->step(p.get(), g.get(), n, segs, 1e-3f * t);
  uint64_t h = fnv1a(p.get(), n, 0xCBF29CE484222325ull);
  for (auto& [name, buf] : opt->state()) h = fnv1a(buf->data(), n, h);
  return h;
}

}  // namespace

std::vector<int64_t> parse_sizes(const std::string& s, const std::string& flag) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    std::string tok = s.substr(pos, end - pos);
    int64_t mult = 1;
    if (!tok.empty() && (tok.back() == 'M' || tok.back() == 'm'))
      mult = 1 << 20, tok.pop_back();
    else if (!tok.empty() && (tok.back() == 'K' || tok.back() == 'k'))
      mult = 1 << 10, tok.pop_back();
    char* e = nullptr;
    long long v = std::strtoll(tok.c_str(), &e, 10);
    bench::check_arg(!tok.empty() && *e == '\0' && v > 0, flag,
                     "expects sizes like 1M,16M,256K,1000, got `" + s.substr(pos, end - pos) + "`");
    out.push_back(v * mult);
    pos = end + 1;
  }
  return out;
}

int run_bench_optim(const OptimBenchOptions& opt) {
  bench::check_arg(opt.iters > 0 && opt.copy_mib > 0 && opt.copy_reps > 0, "--iters",
                   "--iters, --copy-mib and --copy-reps must be positive");
  bench::check_arg(!opt.sizes.empty(), "--sizes", "needs at least one size");
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  omp_set_num_threads(threads);
  const size_t copy_bytes = static_cast<size_t>(opt.copy_mib) << 20;
  bench::JsonLines json(opt.json, true);

  StreamBw bw_before = stream_bandwidth(copy_bytes, opt.copy_reps);

  struct Row {
    int64_t n;
    double sec;
  };
  std::vector<Row> rows;
  for (int64_t n : opt.sizes) {
    Buffer p = make_buffer(n, param_value), g = make_buffer(n, grad_value);
    optim::AdamParams ap;
    ap.weight_decay = 0.01f;
    auto o = optim::make_adam(ap);
    o->init(n);
    std::vector<optim::Segment> segs = {{0, n, true}};
    // Warm-up (page faults are already taken; this settles caches and clocks), then at least 3
    // and at most `iters` timed steps, fewer for big sizes (about 2 s of steps).
    auto t0 = Clock::now();
    o->step(p.get(), g.get(), n, segs, 1e-3f);
    o->step(p.get(), g.get(), n, segs, 1e-3f);
    double warm = seconds_since(t0) / 2;
    int k =
        std::clamp(static_cast<int>(2.0 / std::max(warm, 1e-9)), std::min(3, opt.iters), opt.iters);
    std::vector<double> ts;
    for (int i = 0; i < k; ++i) {
      auto t1 = Clock::now();
      o->step(p.get(), g.get(), n, segs, 1e-3f);
      ts.push_back(seconds_since(t1));
    }
    rows.push_back({n, median(ts)});
  }

  StreamBw bw_after = stream_bandwidth(copy_bytes, opt.copy_reps);
  auto all = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> v = a;
    v.insert(v.end(), b.begin(), b.end());
    return median(v);
  };
  const double bw = all(bw_before.memcpy_bw, bw_after.memcpy_bw);
  const double rmw = all(bw_before.rmw_bw, bw_after.rmw_bw);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"bench\": \"copy_bw\", \"threads\": %d, \"bytes\": %zu, \"gbps\": %.2f, "
                "\"gbps_before\": %.2f, \"gbps_after\": %.2f, \"rmw_gbps\": %.2f}",
                threads, copy_bytes, bw / 1e9, median(bw_before.memcpy_bw) / 1e9,
                median(bw_after.memcpy_bw) / 1e9, rmw / 1e9);
  json.write(buf);
  if (opt.table)
    std::printf(
        "# zerotrain bench optim: AdamW over one flat fp32 span, %d thread(s); copy floor "
        "%.2f GB/s (memcpy, read + write), in-place read-modify-write stream %.2f GB/s\n"
        "# an Adam step moves 28 bytes per parameter (reads p, g, m, v; writes p, m, v)\n"
        "%12s %10s %12s %8s %8s %8s\n",
        threads, bw / 1e9, rmw / 1e9, "params", "ms", "params/s", "GB/s", "/copy", "/rmw");
  for (const Row& r : rows) {
    double params_s = static_cast<double>(r.n) / r.sec, bytes_s = 28.0 * params_s;
    std::snprintf(buf, sizeof buf,
                  "{\"bench\": \"adam\", \"impl\": \"zerotrain\", \"threads\": %d, "
                  "\"params\": %ld, \"ms\": %.3f, \"params_per_s\": %.4g, \"gbps\": %.2f, "
                  "\"fraction_of_copy_bw\": %.3f, \"fraction_of_rmw_bw\": %.3f}",
                  threads, static_cast<long>(r.n), r.sec * 1e3, params_s, bytes_s / 1e9,
                  bytes_s / bw, bytes_s / rmw);
    json.write(buf);
    if (opt.table)
      std::printf("%12ld %10.3f %12.4g %8.2f %8.3f %8.3f\n", static_cast<long>(r.n), r.sec * 1e3,
                  params_s, bytes_s / 1e9, bytes_s / bw, bytes_s / rmw);
  }
  const unsigned long long sum = adam_checksum();
  std::snprintf(buf, sizeof buf,
                "{\"bench\": \"adam_checksum\", \"threads\": %d, \"params\": 1000003, "
                "\"steps\": 3, \"fnv1a\": \"%016llx\"}",
                threads, sum);
  json.write(buf);
  if (opt.table)
    std::printf("# checksum of p, m, v after 3 steps on 1000003 params: %016llx\n", sum);
  std::fflush(stdout);
  return 0;
}

}  // namespace zt::app
