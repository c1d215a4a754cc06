// apps/bench_optim.cpp: the standalone optimizer benchmark, a thin wrapper over the code of
// `zerotrain bench optim` (apps/zerotrain/bench_optim.cpp: what is measured and why). JSON lines
// on stdout only (bench/optim_vs_torch.sh parses every line); --table adds the human table.
// Usage: bench_optim [--threads N] [--sizes 1M,16M,64M,256M] [--iters N] [--copy-mib N] [--table]
#include "apps/zerotrain/bench_optim.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>

int main(int argc, char** argv) {
  zt::app::OptimBenchOptions o;
  o.json.assign(1, '-');  // stdout (o.json = "-" trips GCC 12's -Wrestrict false positive)
  o.table = false;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string k = argv[i];
      if (k == "--table") {
        o.table = true;
        continue;
      }
      if (i + 1 >= argc) throw std::invalid_argument(k + " needs a value");
      const char* v = argv[++i];
      if (k == "--threads")
        o.threads = std::atoi(v);
      else if (k == "--iters")
        o.iters = std::atoi(v);
      else if (k == "--copy-mib")
        o.copy_mib = std::atoi(v);
      else if (k == "--sizes")
        o.sizes = zt::app::parse_sizes(v, "--sizes");
      else
        throw std::invalid_argument("unknown option " + k + " (see the usage line in the source)");
    }
    return zt::app::run_bench_optim(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_optim: %s\n", e.what());
    return 2;
  }
}
