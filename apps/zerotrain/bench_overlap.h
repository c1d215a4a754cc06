// apps/zerotrain/bench_overlap.h: `zerotrain bench overlap`: how much of ZeRO's communication the
// engine hides behind computation, per stage (overlap_comm false vs true). Run it under mpirun;
// bench_overlap.cpp explains the method and how to read the figures.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::app {

struct OverlapBenchOptions {
  // The model: a GPT with few tokens per step, so that communication (proportional to the
  // parameters) is a large share of the step (compute is proportional to parameters x tokens).
  int layers = 4, width = 256, heads = 4, seq = 32, vocab = 256;
  int64_t micro_batch = 2;
  int64_t bucket = 500'000;  // reduce_bucket_size in elements (stages 1, 2)
  std::vector<int> stages = {1, 2, 3};
  int steps = 10, warmup = 2;  // timed and untimed optimizer steps per configuration
  int threads = 0;             // OpenMP threads per rank; 0: the node's cores / its ranks
  std::string json;            // JSON lines: "" none, "-" stdout, else a file (rank 0)
  std::string trace;           // Chrome traces of every run: TRACE.stageS.off.json, ...on.json
  bool table = true;           // the human table and the explanation (rank 0)
};

// Needs comm::Bootstrap::init and at least 2 ranks. Returns 0.
int run_bench_overlap(const OverlapBenchOptions& opt);

}  // namespace zt::app
