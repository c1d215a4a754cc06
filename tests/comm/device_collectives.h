// tests/comm/device_collectives.h: the checks of every collective on device buffers, written once
// and run by tests/comm/test_nccl.cpp (nccl backend) and tests/comm/test_mpi_device.cpp (mpi
// backend, staged through pinned host memory).
//
// Data: comm_test_util.h's exact values (5 significant bits, exponents in [-12, 0]), uploaded to
// this rank's GPU; results come back to the host after wait() and are compared with a reference
// every rank computes. f32 sums of these values are exact in any order, so f32 must match bit for
// bit on both backends. 16-bit: the mpi backend reduces in f32 and rounds once (bitwise equal to
// the reference); NCCL reduces in 16 bits and rounds at each step of its ring, which is the same
// single rounding for 1 or 2 ranks, and within `world` units of 2^-8 beyond (`exact16` false);
// its avg (ncclAvg) is compared with a tolerance beyond one rank, in every dtype.
// Each check uses EXPECT_* only (never an early return before a collective: MPI tests must not
// leave other ranks waiting).
#pragma once

#include "comm/communicator.h"
#include "comm_test_util.h"
#include "core/cuda/stream.h"
#include "core/ops.h"
#include "device_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace zt::comm::test {

inline const int64_t kDeviceSizes[] = {1, 7, 1001, 65537};

inline std::string dlabel(const Communicator& c, const char* op, DType dt, int64_t n,
                          const std::string& extra = "") {
  return c.backend() + " " + op + " " + dtype_name(dt) + " n=" + std::to_string(n) +
         (extra.empty() ? "" : " " + extra);
}

// Compares a device result with the reference: bitwise, or within 16-bit per-step rounding.
inline void expect_device(const Tensor& dev, const std::vector<float>& ref, bool exact, int world,
                          const std::string& what) {
  Tensor h = to_host(dev);
  if (exact) {
    expect_equal(h, ref, what);
    return;
  }
  std::vector<double> r(ref.begin(), ref.end());
  // Values and sums are at most `world` in magnitude; a few roundings of f32 or of 16 bits each.
  const double unit = h.dtype() == DType::f32 ? std::ldexp(1.0, -22) : std::ldexp(1.0, -7);
  const double tol = world * unit;
  expect_near(
      h, r, [tol](double) { return tol; }, what);
}

// A device tensor of n elements of dt holding f(i) rounded to dt.
template <typename F>
Tensor device_tensor(DType dt, int64_t n, F f) {
  return to_device(make_tensor(dt, n, f), my_gpu());
}

inline void check_all_reduce(Communicator& c, DType dt, bool exact16) {
  const int me = c.rank(), w = c.world();
  for (int64_t n : kDeviceSizes)
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max}) {
      Tensor buf = device_tensor(dt, n, [&](int64_t i) { return exact_value(me, i); });
      c.all_reduce(buf, op)->wait();
      // ncclAvg scales in its own way (not sum then one division): not bitwise beyond one rank
      const bool nccl_avg = op == ReduceOp::avg && w > 1 && c.backend() == "nccl";
      const bool exact = (exact16 || dt == DType::f32) && !nccl_avg;
      expect_device(buf, reduce_reference(dt, op, w, n, exact_value), exact || w == 1, w,
                    dlabel(c, "all_reduce", dt, n, reduce_op_name(op)));
    }
}

inline void check_reduce_scatter(Communicator& c, DType dt, bool exact16) {
  const int me = c.rank(), w = c.world();
  for (int64_t n : kDeviceSizes)
    for (bool in_place : {false, true}) {
      // Rank r contributes exact_value(r, i) for i in [0, w*n); rank me gets chunk me reduced.
      Tensor in = device_tensor(dt, w * n, [&](int64_t i) { return exact_value(me, i); });
      Tensor out = in_place ? in.flat_view(me * n, {n}) : Tensor::empty({n}, dt, my_gpu());
      c.reduce_scatter(in, out, ReduceOp::sum)->wait();
      std::vector<float> full = reduce_reference(dt, ReduceOp::sum, w, w * n, exact_value);
      std::vector<float> ref(full.begin() + me * n, full.begin() + (me + 1) * n);
      expect_device(out, ref, exact16 || dt == DType::f32, w,
                    dlabel(c, "reduce_scatter", dt, n, in_place ? "in place" : ""));
    }
}

// Uneven parts: rank r holds (r * 37 + n) % (n + 1) elements (some 0; the last rank 0 beyond 2).
inline std::vector<int64_t> uneven_counts(int world, int64_t n) {
  std::vector<int64_t> counts(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) counts[static_cast<size_t>(r)] = (r * 37 + n) % (n + 1);
  if (world > 2) counts.back() = 0;
  return counts;
}

inline void check_reduce_scatter_v(Communicator& c, DType dt, bool exact16) {
  const int me = c.rank(), w = c.world();
  for (int64_t n : kDeviceSizes) {
    std::vector<int64_t> counts = uneven_counts(w, n);
    int64_t total = 0, off = 0;
    for (int r = 0; r < w; ++r) {
      if (r < me) off += counts[static_cast<size_t>(r)];
      total += counts[static_cast<size_t>(r)];
    }
    const int64_t mine = counts[static_cast<size_t>(me)];
    Tensor in = device_tensor(dt, total, [&](int64_t i) { return exact_value(me, i); });
    Tensor out = Tensor::empty({mine}, dt, my_gpu());
    c.reduce_scatter_v(in, out, counts, ReduceOp::sum)->wait();
    std::vector<float> full = reduce_reference(dt, ReduceOp::sum, w, total, exact_value);
    std::vector<float> ref(full.begin() + off, full.begin() + off + mine);
    expect_device(out, ref, exact16 || dt == DType::f32, w, dlabel(c, "reduce_scatter_v", dt, n));
  }
}

inline void check_all_gather(Communicator& c, DType dt) {
  const int me = c.rank(), w = c.world();
  auto value = [](int r, int64_t i) { return exact_value(r, i + 3); };
  for (int64_t n : kDeviceSizes)
    for (bool in_place : {false, true}) {
      Tensor out = Tensor::zeros({w * n}, dt, my_gpu());
      Tensor in = in_place ? out.flat_view(me * n, {n}) : Tensor::empty({n}, dt, my_gpu());
      ops::copy(make_tensor(dt, n, [&](int64_t i) { return value(me, i); }), in);
      c.all_gather(in, out)->wait();
      std::vector<float> ref(static_cast<size_t>(w * n));
      for (int r = 0; r < w; ++r)
        for (int64_t i = 0; i < n; ++i)
          ref[static_cast<size_t>(r * n + i)] = round_to(dt, value(r, i));
      expect_device(out, ref, true, w, dlabel(c, "all_gather", dt, n, in_place ? "in place" : ""));
    }
}

inline void check_all_gather_v(Communicator& c, DType dt) {
  const int me = c.rank(), w = c.world();
  for (int64_t n : kDeviceSizes)
    for (bool in_place : {false, true}) {
      std::vector<int64_t> counts = uneven_counts(w, n);
      int64_t total = 0, off = 0;
      for (int r = 0; r < w; ++r) {
        if (r < me) off += counts[static_cast<size_t>(r)];
        total += counts[static_cast<size_t>(r)];
      }
      const int64_t mine = counts[static_cast<size_t>(me)];
      Tensor out = Tensor::zeros({total}, dt, my_gpu());
      Tensor in = in_place ? out.flat_view(off, {mine}) : Tensor::empty({mine}, dt, my_gpu());
      // Element j of rank r's part is exact_value(r, j).
      ops::copy(make_tensor(dt, mine, [&](int64_t j) { return exact_value(me, j); }), in);
      c.all_gather_v(in, out, counts)->wait();
      std::vector<float> ref;
      for (int r = 0; r < w; ++r)
        for (int64_t j = 0; j < counts[static_cast<size_t>(r)]; ++j)
          ref.push_back(round_to(dt, exact_value(r, j)));
      expect_device(out, ref, true, w,
                    dlabel(c, "all_gather_v", dt, n, in_place ? "in place" : ""));
    }
}

inline void check_broadcast(Communicator& c, DType dt) {
  const int me = c.rank(), w = c.world();
  for (int64_t n : kDeviceSizes)
    for (int root = 0; root < w; ++root) {
      Tensor buf = device_tensor(dt, n, [&](int64_t i) { return exact_value(me, i); });
      c.broadcast(buf, root)->wait();
      std::vector<float> ref(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        ref[static_cast<size_t>(i)] = round_to(dt, exact_value(root, i));
      expect_device(buf, ref, true, w,
                    dlabel(c, "broadcast", dt, n, "root " + std::to_string(root)));
    }
}

inline void check_all_to_all(Communicator& c, DType dt) {
  const int me = c.rank(), w = c.world();
  // Chunk r of rank s's input holds exact_value(s * w + r, i); chunk s of rank r's output too.
  for (int64_t n : kDeviceSizes) {
    Tensor in = device_tensor(
        dt, w * n, [&](int64_t k) { return exact_value(me * w + static_cast<int>(k / n), k % n); });
    Tensor out = Tensor::zeros({w * n}, dt, my_gpu());
    c.all_to_all(in, out)->wait();
    std::vector<float> ref(static_cast<size_t>(w * n));
    for (int s = 0; s < w; ++s)
      for (int64_t i = 0; i < n; ++i)
        ref[static_cast<size_t>(s * n + i)] = round_to(dt, exact_value(s * w + me, i));
    expect_device(out, ref, true, w, dlabel(c, "all_to_all", dt, n));
  }
}

// The collective runs after the kernels that produced its data on the caller's stream, without a
// host synchronisation between them: fill on a non-default stream, all_reduce at once, and the
// result on that same stream after wait().
inline void check_ordered_after_producer(Communicator& c) {
  const int w = c.world();
  cuda::Stream s = cuda::Stream::create(my_gpu().index);
  cuda::StreamGuard guard(s);
  const int64_t n = int64_t{1} << 22;  // 16 MiB: the fill is still running when the op is issued
  Tensor buf = Tensor::empty({n}, DType::f32, my_gpu());
  for (int round = 1; round <= 3; ++round) {
    ops::fill(buf, static_cast<float>(round));
    c.all_reduce(buf, ReduceOp::sum)->wait();
    ops::scale(buf, 0.5f);  // after wait(): ordered after the collective on this stream
    std::vector<float> got = to_host(buf).to_vector();
    const float want = 0.5f * static_cast<float>(round * w);
    int64_t bad = 0;
    for (float v : got) bad += v != want;
    EXPECT_EQ(bad, 0) << c.backend() << " round " << round << ": " << bad << " of " << n
                      << " elements differ from " << want << " (first " << got[0] << ")";
  }
}

// Every op of one dtype (the whole interface), then a barrier.
inline void check_every_op(Communicator& c, DType dt, bool exact16) {
  check_all_reduce(c, dt, exact16);
  check_reduce_scatter(c, dt, exact16);
  check_reduce_scatter_v(c, dt, exact16);
  check_all_gather(c, dt);
  check_all_gather_v(c, dt);
  check_broadcast(c, dt);
  check_all_to_all(c, dt);
  c.barrier();
}

}  // namespace zt::comm::test
