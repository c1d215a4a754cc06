// apps/zerotrain/bench_comm.h: `zerotrain bench comm` (and apps/bench_comm.cpp): bandwidth of the
// Communicator's collectives on the mpi backend, nccl-tests style (CONVENTIONS 13), each next to
// the raw MPI call on the same buffers. Run it under mpirun; see bench_comm.cpp for the method.
#pragma once

#include "core/dtype.h"

#include <cstdint>
#include <string>
#include <vector>

namespace zt::app {

struct CommBenchOptions {
  int64_t min_bytes = 1024, max_bytes = int64_t{64} << 20, step = 4;  // sizes: min, min*step, ...
  DType dtype = DType::f32;
  int trials = 11, warmup = 2;
  int iters = 0;  // ops per trial; 0: by size (128 MiB of traffic, 4..200 ops)
  std::vector<std::string> ops = {"all_reduce", "reduce_scatter", "reduce_scatter_v",
                                  "all_gather", "all_gather_v",   "broadcast",
                                  "all_to_all"};
  bool raw = true;        // also time the raw MPI call on the same buffers
  std::string json = "";  // JSON lines: "" none, "-" stdout, else a file (rank 0)
  bool table = true;      // the human table on stdout (rank 0)
};

// Every op the benchmark knows, in the default order.
const std::vector<std::string>& comm_bench_ops();
// "a,b,c" -> ops; zt::ConfigError naming `flag` and the unknown op.
std::vector<std::string> parse_comm_ops(const std::string& list, const std::string& flag);

// Runs the benchmark on every rank (comm::Bootstrap::init must have run). Returns 0, or 1 when
// some collective gave a wrong element (#wrong > 0), the same on every rank.
int run_bench_comm(const CommBenchOptions& opt);

}  // namespace zt::app
