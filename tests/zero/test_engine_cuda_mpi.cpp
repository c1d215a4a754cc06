// tests/zero/test_engine_cuda_mpi.cpp: two ranks sharing one GPU (the H100 machine has one; NCCL
// refuses two ranks on one GPU, so they talk over the mpi backend, which stages the device buffers
// through host memory) train like one CPU process with the global batch: ZeRO stages 1 and 2, f32
// and bf16, losses step by step and the final weights (tests/zero/engine_compare.h, the CPU
// reference). Tolerances as tests/zero/test_engine_cuda.cpp's 20-step runs: GPU kernels and the
// reduction order both differ from the reference. Never run yet (no GPU in the session that wrote
// it). Without a GPU every rank skips (device_count is the same on every rank of one machine).
#include <gtest/gtest.h>

#include "core/cuda/device.h"
#include "tests/zero/engine_compare.h"
#include "zero/engine.h"

using namespace zt;
using test::base;
using test::compare;

namespace {

zero::EngineSettings on_gpu(zero::EngineSettings s) {
  s.device = Device::cuda(0);  // both ranks: the one GPU
  return s;
}

#define ZT_REQUIRE_GPU()                                                                \
  do {                                                                                  \
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU: " << cuda::device_summary(); \
  } while (0)

}  // namespace

TEST(EngineCudaMpi, Stage1F32) {
  ZT_REQUIRE_GPU();
  compare(on_gpu(base(1, 2, 1)), 20, 1e-4, 1e-3);
}

TEST(EngineCudaMpi, Stage2F32OverlapSmallBuckets) {
  ZT_REQUIRE_GPU();
  auto s = on_gpu(base(2, 2, 1));
  s.overlap_comm = true;
  s.reduce_bucket_size = 1000;  // buckets launched from the backward hooks, smaller than a layer
  compare(s, 20, 1e-4, 1e-3);
}

TEST(EngineCudaMpi, Stage2Bf16) {
  ZT_REQUIRE_GPU();
  auto s = on_gpu(base(2, 2, 1));
  s.model_dtype = DType::bf16;
  s.overlap_comm = true;
  s.reduce_bucket_size = 3000;
  compare(s, 20, 5e-3, 1e-2);
}

TEST(EngineCudaMpi, Stage1Bf16GradientsAndChunkedGather) {
  ZT_REQUIRE_GPU();
  auto s = on_gpu(base(1, 2, 1));
  s.model_dtype = DType::bf16;
  s.grad_dtype = DType::bf16;      // 16-bit reduced gradients on the device
  s.allgather_bucket_size = 999;   // the chunked all-gather's device-to-device copies
  compare(s, 20, 5e-3, 1e-2);
}
