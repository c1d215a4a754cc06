// apps/bench_comm.cpp: the standalone collective benchmark, a thin wrapper over the code of
// `zerotrain bench comm` (apps/zerotrain/bench_comm.cpp: the method, the ops, the columns). It
// keeps the older flags and prints JSON lines on stdout, then the table.
//
// Usage: mpirun -n 4 bench_comm [--min-bytes 1024] [--max-bytes 67108864] [--step 4]
//        [--dtype f32|f16|bf16] [--trials 11] [--warmup 2] [--iters N]
//        [--ops all_reduce,reduce_scatter,reduce_scatter_v,all_gather,all_gather_v,broadcast,
//        all_to_all] [--no-raw] [--no-json] [--no-table]
#include "apps/zerotrain/bench_comm.h"

#include "comm/bootstrap.h"
#include "core/error.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

using zt::app::CommBenchOptions;

[[noreturn]] void usage_error(const std::string& msg) {
  throw zt::ConfigError(
      msg +
      "\nusage: bench_comm [--min-bytes N] [--max-bytes N] [--step N] [--dtype "
      "f32|f16|bf16] [--trials N] [--warmup N] [--iters N] [--ops a,b] [--no-raw] "
      "[--no-json] [--no-table]");
}

int64_t parse_int(const std::string& flag, const char* v) {
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || x < 0)
    usage_error(flag + " expects a non-negative integer, got " + v);
  return x;
}

CommBenchOptions parse(int argc, char** argv) {
  CommBenchOptions a;
  a.json.assign(1, '-');  // stdout (a.json = "-" trips GCC 12's -Wrestrict false positive)
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage_error(f + " needs a value");
      return argv[++i];
    };
    if (f == "--min-bytes")
      a.min_bytes = parse_int(f, value());
    else if (f == "--max-bytes")
      a.max_bytes = parse_int(f, value());
    else if (f == "--step")
      a.step = parse_int(f, value());
    else if (f == "--trials")
      a.trials = static_cast<int>(parse_int(f, value()));
    else if (f == "--warmup")
      a.warmup = static_cast<int>(parse_int(f, value()));
    else if (f == "--iters")
      a.iters = static_cast<int>(parse_int(f, value()));
    else if (f == "--dtype")
      a.dtype = zt::dtype_from_name(value());
    else if (f == "--ops")
      a.ops = zt::app::parse_comm_ops(value(), "--ops");
    else if (f == "--no-raw")
      a.raw = false;
    else if (f == "--no-json")
      a.json.clear();
    else if (f == "--no-table")
      a.table = false;
    else
      usage_error("unknown argument `" + f + "`");
  }
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    zt::comm::Bootstrap::init(&argc, &argv);
    return zt::app::run_bench_comm(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_comm: error: %s\n", e.what());
    zt::comm::Bootstrap::abort(2);
  }
}
