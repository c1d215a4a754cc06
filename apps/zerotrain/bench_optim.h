// apps/zerotrain/bench_optim.h: `zerotrain bench optim` (and apps/bench_optim.cpp): the CPU
// optimizer step's throughput (AdamW over one flat fp32 span, parameters/s and GB/s) next to the
// machine's copy bandwidth measured in the same run. One process; see bench_optim.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::app {

struct OptimBenchOptions {
  int threads = 0;  // OpenMP threads; 0: OpenMP's default
  std::vector<int64_t> sizes = {int64_t{1} << 20, int64_t{16} << 20, int64_t{64} << 20,
                                int64_t{256} << 20};
  int iters = 20;      // at most this many timed steps per size (about 2 s of steps)
  int copy_mib = 512;  // MiB per buffer of the copy-bandwidth reference
  int copy_reps = 10;  // repetitions of the reference, before and after the Adam runs
  std::string json;    // JSON lines: "" none, "-" stdout, else a file
  bool table = true;   // the human table on stdout
};

// "1M,16M,256K,1000" -> element counts; ConfigError naming `flag` on a bad entry.
std::vector<int64_t> parse_sizes(const std::string& list, const std::string& flag);

// Returns 0.
int run_bench_optim(const OptimBenchOptions& opt);

}  // namespace zt::app
