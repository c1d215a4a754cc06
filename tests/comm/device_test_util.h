// tests/comm/device_test_util.h: helpers of the GPU comm suites (test_nccl, test_mpi_device): a
// skip decision every rank shares, and host <-> device copies of test tensors.
//
// Skipping under MPI: a rank that skips while another runs would leave the other waiting in the
// first collective. So whether to skip is agreed by all ranks (an MPI_Allreduce of "I have a GPU")
// and every test checks it before its first collective: all ranks skip with the same message.
#pragma once

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm_test_util.h"
#include "core/cuda/device.h"
#include "core/ops.h"
#include "core/tensor.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace zt::comm::test {

// "" when every rank has a GPU; otherwise why the GPU tests skip (the same text on every rank).
inline const std::string& gpu_skip_reason() {
  static const std::string reason = [] {
    const int mine = cuda::device_count() > 0 ? 1 : 0;
    int all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (all == 1) return std::string();
#if ZT_WITH_CUDA
    return "no GPU on some rank (this rank: " + cuda::device_summary() + ")";
#else
    return std::string("no GPU: built without CUDA (-DZT_CUDA=OFF)");
#endif
  }();
  return reason;
}

#define ZT_SKIP_WITHOUT_GPU()                              \
  do {                                                     \
    if (!::zt::comm::test::gpu_skip_reason().empty())      \
      GTEST_SKIP() << ::zt::comm::test::gpu_skip_reason(); \
  } while (0)

// This rank's GPU (local rank modulo the visible GPUs).
inline Device my_gpu() { return Device::cuda(local_rank_device()); }

inline Tensor to_device(const Tensor& h, Device d) {
  Tensor t = Tensor::empty(h.shape(), h.dtype(), d);
  ops::copy(h, t);
  return t;
}

inline Tensor to_host(const Tensor& d) {
  Tensor h = Tensor::empty(d.shape(), d.dtype());
  ops::copy(d, h);  // on the current stream, synchronised
  return h;
}

// Reference of op over ranks of f(rank, i) (values rounded to dt first), rounded once to dt: what
// a reduction in f32 gives bit for bit on comm_test_util.h's exact values.
template <typename F>
std::vector<float> reduce_reference(DType dt, ReduceOp op, int world, int64_t n, F f) {
  std::vector<float> ref(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double acc = op == ReduceOp::max ? -INFINITY : 0.0;
    for (int r = 0; r < world; ++r) {
      double v = round_to(dt, f(r, i));
      acc = op == ReduceOp::max ? std::max(acc, v) : acc + v;
    }
    if (op == ReduceOp::avg) acc /= world;
    ref[static_cast<size_t>(i)] = round_to(dt, acc);
  }
  return ref;
}

}  // namespace zt::comm::test
