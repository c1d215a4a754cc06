// core/cuda/blas_lt.h: what core/cuda/blas.cpp (cuBLASLt) lets a test or a benchmark see and steer:
// counters of its plan cache and a switch for the fused epilogues. No cuBLAS types here (public
// headers stay free of CUDA's: CONVENTIONS.md 2); the CPU-only build links stub versions
// (core/cuda/stub.cpp: zero counters, the switch is remembered and does nothing).
//
// A plan is what one product needs besides its pointers: the matmul descriptor (transposes,
// epilogue, aux leading dimension), the three matrix layouts and the algorithm cuBLASLt's heuristic
// picked. Plans are cached per (device, dtypes, batch, m, n, k, transposes, epilogue, alignments of
// every pointer), so in the steady state of training (the same shapes every step) no product asks
// the heuristic again: `heuristic_queries` stops growing after the first step.
#pragma once

#include <cstdint>

namespace zt::cuda {

struct BlasStats {
  int64_t heuristic_queries = 0;  // cublasLtMatmulAlgoGetHeuristic calls (= plans built)
  int64_t plan_hits = 0;          // products that found their plan in the cache
  int64_t fused_calls = 0;        // products run with a bias/GELU/DGELU/BGRADB epilogue
  int64_t fused_unsupported = 0;  // epilogue requests cuBLASLt refused (then run unfused)
};
BlasStats blas_stats();

// On by default. Off: core/ops.h's linear_* run unfused (matmul + bias_add + GELU kernels), which a
// test uses to compare the two paths and a benchmark to measure what the fusion buys.
void set_fused_epilogues(bool on);
bool fused_epilogues();

}  // namespace zt::cuda
