// tests/comm/test_collectives.cpp: every collective of the mpi backend against a serial reference
// that every rank computes from the deterministic per-rank data of comm_test_util.h, for odd sizes
// (1, 7, 1001, 65537), f32/f16/bf16 (and i32), and the three ways a communicator runs (threaded,
// chunked+staged, inline). Runs under mpiexec with 1, 2 and 4 ranks (tests/comm/CMakeLists.txt).
#include "comm/communicator.h"
#include "comm_test_util.h"
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

namespace zt::comm::test {
namespace {

const ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max};

// Reference of op over ranks of f(rank, i), rounded once to dt.
template <typename F>
std::vector<float> reduce_ref(DType dt, ReduceOp op, int world, int64_t n, F f) {
  std::vector<float> ref(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double acc = op == ReduceOp::max ? -INFINITY : 0.0;
    for (int r = 0; r < world; ++r) {
      double v = round_to(dt, f(r, i));
      acc = op == ReduceOp::max ? std::max(acc, v) : acc + v;
    }
    if (op == ReduceOp::avg) acc /= world;
    ref[i] = round_to(dt, acc);
  }
  return ref;
}

std::string label(const char* op, DType dt, Variant v, int64_t n, const char* extra = "") {
  return std::string(op) + " " + dtype_name(dt) + " " + variant_name(v) +
         " n=" + std::to_string(n) + (*extra ? " " : "") + extra;
}

class Collectives : public testing::TestWithParam<std::tuple<DType, Variant>> {
 protected:
  DType dt() const { return std::get<0>(GetParam()); }
  Variant variant() const { return std::get<1>(GetParam()); }
  Communicator& comm() const { return comm_for(variant()); }
};

TEST_P(Collectives, AllReduceExact) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  for (int64_t n : kSizes)
    for (ReduceOp op : kOps) {
      Tensor buf = make_tensor(dt(), n, [&](int64_t i) { return exact_value(me, i); });
      c.all_reduce(buf, op)->wait();
      expect_equal(buf, reduce_ref(dt(), op, w, n, exact_value),
                   label("all_reduce", dt(), variant(), n, reduce_op_name(op)));
    }
}

TEST_P(Collectives, AllReduceRandomWithinPrecision) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  // One rounding of an f32 sum: half an ulp of the dtype, plus f32's own error on w terms.
  const double rel = dt() == DType::f32 ? 0x1p-24 : dt() == DType::f16 ? 0x1p-11 : 0x1p-8;
  for (int64_t n : kSizes) {
    Tensor buf = make_tensor(dt(), n, [&](int64_t i) { return random_value(me, i); });
    c.all_reduce(buf)->wait();
    std::vector<double> ref(static_cast<size_t>(n), 0.0);
    for (int r = 0; r < w; ++r)
      for (int64_t i = 0; i < n; ++i) ref[i] += round_to(dt(), random_value(r, i));
    expect_near(
        buf, ref, [&](double x) { return rel * std::fabs(x) + w * 0x1p-24 + 1e-7; },
        label("all_reduce random", dt(), variant(), n));
  }
}

TEST_P(Collectives, ReduceScatterExact) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  for (int64_t n : kSizes)
    for (ReduceOp op : kOps) {
      Tensor in = make_tensor(dt(), w * n, [&](int64_t i) { return exact_value(me, i); });
      Tensor out = make_tensor(dt(), n, [](int64_t) { return -7.0; });
      c.reduce_scatter(in, out, op)->wait();
      std::vector<float> full = reduce_ref(dt(), op, w, w * n, exact_value);
      std::vector<float> mine(full.begin() + me * n, full.begin() + (me + 1) * n);
      expect_equal(out, mine, label("reduce_scatter", dt(), variant(), n, reduce_op_name(op)));
    }
}

// Uneven parts (ZeRO stage 2's bucket straight into the owning partitions): odd counts that differ
// per rank, and counts with empty parts.
TEST_P(Collectives, ReduceScatterVExact) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  for (int64_t n : kSizes)
    for (int pattern = 0; pattern < 2; ++pattern) {
      std::vector<int64_t> counts(static_cast<size_t>(w));
      for (int r = 0; r < w; ++r) counts[r] = pattern == 0 ? n + r : (r % 2 == 0 ? n : 0);
      int64_t total = 0, offset = 0;
      for (int r = 0; r < w; ++r) {
        if (r == me) offset = total;
        total += counts[r];
      }
      for (ReduceOp op : kOps) {
        Tensor in = make_tensor(dt(), total, [&](int64_t i) { return exact_value(me, i); });
        Tensor out = make_tensor(dt(), counts[me], [](int64_t) { return -7.0; });
        c.reduce_scatter_v(in, out, counts, op)->wait();
        std::vector<float> full = reduce_ref(dt(), op, w, total, exact_value);
        std::vector<float> mine(full.begin() + offset, full.begin() + offset + counts[me]);
        expect_equal(
            out, mine,
            label(
                "reduce_scatter_v", dt(), variant(), n,
                (std::string(reduce_op_name(op)) + " pattern " + std::to_string(pattern)).c_str()));
      }
    }
}

TEST_P(Collectives, AllGatherBitwise) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  for (int64_t n : kSizes) {
    Tensor in = make_tensor(dt(), n, [&](int64_t i) { return random_value(me, i); });
    Tensor out = make_tensor(dt(), w * n, [](int64_t) { return -7.0; });
    c.all_gather(in, out)->wait();
    std::vector<float> ref;
    for (int r = 0; r < w; ++r)
      for (int64_t i = 0; i < n; ++i) ref.push_back(round_to(dt(), random_value(r, i)));
    expect_equal(out, ref, label("all_gather", dt(), variant(), n));
  }
}

// Uneven parts (ZeRO stage 3's gather of one unit's range): counts that differ per rank, empty
// parts, and in place (in is exactly this rank's part of out).
TEST_P(Collectives, AllGatherVBitwise) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  for (int64_t n : kSizes)
    for (int pattern = 0; pattern < 3; ++pattern) {
      std::vector<int64_t> counts(static_cast<size_t>(w));
      for (int r = 0; r < w; ++r) counts[r] = pattern == 0 ? n + r : (r % 2 == 0 ? n : 0);
      int64_t total = 0, offset = 0;
      for (int r = 0; r < w; ++r) {
        if (r == me) offset = total;
        total += counts[r];
      }
      std::vector<float> ref;
      for (int r = 0; r < w; ++r)
        for (int64_t i = 0; i < counts[r]; ++i) ref.push_back(round_to(dt(), random_value(r, i)));
      Tensor out = make_tensor(dt(), total, [](int64_t) { return -7.0; });
      if (pattern == 2) {  // in place
        Tensor mine = out.flat_view(offset, {counts[me]});
        Tensor src = make_tensor(dt(), counts[me], [&](int64_t i) { return random_value(me, i); });
        std::memcpy(mine.raw(), src.raw(), src.nbytes());
        c.all_gather_v(mine, out, counts)->wait();
      } else {
        Tensor in = make_tensor(dt(), counts[me], [&](int64_t i) { return random_value(me, i); });
        c.all_gather_v(in, out, counts)->wait();
      }
      expect_equal(out, ref, label("all_gather_v", dt(), variant(), n,
                                   ("pattern " + std::to_string(pattern)).c_str()));
    }
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  for (int64_t n : kSizes)
    for (int root = 0; root < w; ++root) {
      Tensor buf = make_tensor(dt(), n, [&](int64_t i) { return random_value(me, i); });
      c.broadcast(buf, root)->wait();
      std::vector<float> ref;
      for (int64_t i = 0; i < n; ++i) ref.push_back(round_to(dt(), random_value(root, i)));
      expect_equal(
          buf, ref,
          label("broadcast", dt(), variant(), n, ("root " + std::to_string(root)).c_str()));
    }
}

// In place the way ZeRO uses it: all_gather where in is chunk rank() of out; reduce_scatter where
// out is chunk rank() of in. And overlaps that are not in place (they cost a copy).
TEST_P(Collectives, InPlaceAndOverlapping) {
  Communicator& c = comm();
  const int me = c.rank(), w = c.world();
  for (int64_t n : kSizes) {
    {  // all_gather in place
      Tensor out = make_tensor(
          dt(), w * n, [&](int64_t i) { return i / n == me ? random_value(me, i % n) : -7.0; });
      Tensor in = out.flat_view(me * n, {n});
      c.all_gather(in, out)->wait();
      std::vector<float> ref;
      for (int r = 0; r < w; ++r)
        for (int64_t i = 0; i < n; ++i) ref.push_back(round_to(dt(), random_value(r, i)));
      expect_equal(out, ref, label("all_gather in place", dt(), variant(), n));
    }
    {  // all_gather whose input is chunk 0 of out on every rank (not in place unless rank 0)
      Tensor out =
          make_tensor(dt(), w * n, [&](int64_t i) { return i < n ? random_value(me, i) : -7.0; });
      Tensor in = out.flat_view(0, {n});
      c.all_gather(in, out)->wait();
      std::vector<float> ref;
      for (int r = 0; r < w; ++r)
        for (int64_t i = 0; i < n; ++i) ref.push_back(round_to(dt(), random_value(r, i)));
      expect_equal(out, ref, label("all_gather overlapping", dt(), variant(), n));
    }
    {  // reduce_scatter in place: out is chunk rank() of in
      Tensor in = make_tensor(dt(), w * n, [&](int64_t i) { return exact_value(me, i); });
      Tensor out = in.flat_view(me * n, {n});
      c.reduce_scatter(in, out)->wait();
      std::vector<float> full = reduce_ref(dt(), ReduceOp::sum, w, w * n, exact_value);
      expect_equal(out, std::vector<float>(full.begin() + me * n, full.begin() + (me + 1) * n),
                   label("reduce_scatter in place", dt(), variant(), n));
    }
    if (w > 1 || n > 1) {  // reduce_scatter with out one element into in: input must be copied
      Tensor big = make_tensor(dt(), w * n + 1, [&](int64_t i) { return exact_value(me, i); });
      Tensor in = big.flat_view(0, {w * n});
      Tensor out = big.flat_view(1, {n});
      c.reduce_scatter(in, out)->wait();
      std::vector<float> full = reduce_ref(dt(), ReduceOp::sum, w, w * n, exact_value);
      expect_equal(out, std::vector<float>(full.begin() + me * n, full.begin() + (me + 1) * n),
                   label("reduce_scatter overlapping", dt(), variant(), n));
    }
  }
}

std::string param_name(const testing::TestParamInfo<std::tuple<DType, Variant>>& info) {
  return std::string(dtype_name(std::get<0>(info.param))) + "_" +
         variant_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Comm, Collectives,
                         testing::Combine(testing::Values(DType::f32, DType::f16, DType::bf16),
                                          testing::Values(Variant::threaded, Variant::chunked,
                                                          Variant::inline_)),
                         param_name);

// i32, for small control reductions (overflow flags, token counts).
TEST(CollectivesI32, AllReduceReduceScatterAllGatherBroadcast) {
  for (Variant v : {Variant::threaded, Variant::chunked}) {
    Communicator& c = comm_for(v);
    const int me = c.rank(), w = c.world();
    auto val = [](int r, int64_t i) { return static_cast<double>((i * 7 + r * 13) % 1000 - 500); };
    for (int64_t n : kSizes) {
      for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
        Tensor buf = make_tensor(DType::i32, n, [&](int64_t i) { return val(me, i); });
        c.all_reduce(buf, op)->wait();
        expect_equal(buf, reduce_ref(DType::i32, op, w, n, val),
                     label("all_reduce", DType::i32, v, n, reduce_op_name(op)));
        Tensor in = make_tensor(DType::i32, w * n, [&](int64_t i) { return val(me, i); });
        Tensor out = Tensor::zeros({n}, DType::i32);
        c.reduce_scatter(in, out, op)->wait();
        std::vector<float> full = reduce_ref(DType::i32, op, w, w * n, val);
        expect_equal(out, std::vector<float>(full.begin() + me * n, full.begin() + (me + 1) * n),
                     label("reduce_scatter", DType::i32, v, n, reduce_op_name(op)));
        std::vector<int64_t> counts(static_cast<size_t>(w), n);
        Tensor out_v = Tensor::zeros({n}, DType::i32);
        c.reduce_scatter_v(in, out_v, counts, op)->wait();
        expect_equal(out_v, std::vector<float>(full.begin() + me * n, full.begin() + (me + 1) * n),
                     label("reduce_scatter_v", DType::i32, v, n, reduce_op_name(op)));
      }
      Tensor in = make_tensor(DType::i32, n, [&](int64_t i) { return val(me, i); });
      Tensor out = Tensor::zeros({w * n}, DType::i32);
      c.all_gather(in, out)->wait();
      std::vector<float> ref;
      for (int r = 0; r < w; ++r)
        for (int64_t i = 0; i < n; ++i) ref.push_back(static_cast<float>(val(r, i)));
      expect_equal(out, ref, label("all_gather", DType::i32, v, n));
      Tensor b = make_tensor(DType::i32, n, [&](int64_t i) { return val(me, i); });
      c.broadcast(b, w - 1)->wait();
      expect_equal(b, std::vector<float>(ref.end() - n, ref.end()),
                   label("broadcast", DType::i32, v, n));
    }
  }
}

// The precision argument in one case: rank 0 holds 1, every other rank half an ulp of 1 (2^-11
// in f16, 2^-8 in bf16). Summed in f32 and rounded once the result is 1 + (w-1) half-ulps,
// rounded; adding in 16 bits step by step would round each tie to even and stay at 1.
TEST(CollectivesPrecision, SixteenBitSumsRoundOnce) {
  Communicator& c = world_comm();
  const int me = c.rank(), w = c.world();
  for (DType dt : {DType::f16, DType::bf16}) {
    const double half_ulp = dt == DType::f16 ? 0x1p-11 : 0x1p-8;
    Tensor buf = make_tensor(dt, 3, [&](int64_t) { return me == 0 ? 1.0 : half_ulp; });
    c.all_reduce(buf)->wait();
    float expected = round_to(dt, 1.0 + (w - 1) * half_ulp);
    for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(element(buf, i), expected) << dtype_name(dt);
  }
}

// Special values survive the f32 staging: inf, subnormals, signed zero (max and 1-rank sums).
TEST(CollectivesPrecision, SpecialValuesThroughStaging) {
  Communicator& c = world_comm();
  const int w = c.world();
  for (DType dt : {DType::f16, DType::bf16}) {
    const double sub = dt == DType::f16 ? 0x1p-24 : 0x1p-133;  // smallest subnormal
    const std::vector<double> vals = {INFINITY, -INFINITY, sub, -sub, 3 * sub, 0.0, 65504.0, -2.5};
    Tensor buf =
        make_tensor(dt, static_cast<int64_t>(vals.size()), [&](int64_t i) { return vals[i]; });
    c.all_reduce(buf, ReduceOp::max)->wait();
    for (size_t i = 0; i < vals.size(); ++i)
      EXPECT_EQ(element(buf, static_cast<int64_t>(i)), round_to(dt, vals[i]))
          << dtype_name(dt) << " max of " << vals[i];
    Tensor avg =
        make_tensor(dt, static_cast<int64_t>(vals.size()), [&](int64_t i) { return vals[i]; });
    c.all_reduce(avg, ReduceOp::avg)->wait();  // the average of w equal values is the value
    for (size_t i = 0; i < vals.size(); ++i)
      EXPECT_EQ(element(avg, static_cast<int64_t>(i)), round_to(dt, vals[i]))
          << dtype_name(dt) << " avg of " << vals[i] << " over " << w;
  }
}

// Invalid arguments are refused at issue time, on the caller's thread, before anything is queued
// (so every rank throws alike and nothing is left waiting).
TEST(CollectivesErrors, ArgumentsCheckedAtIssue) {
  Communicator& c = world_comm();
  const int w = c.world();
  Tensor f = Tensor::zeros({8});
  Tensor i = Tensor::zeros({8}, DType::i32);
  Tensor l = Tensor::zeros({8}, DType::i64);
  Tensor small = Tensor::zeros({8 * w + 1});
  Tensor half = Tensor::zeros({8 * w}, DType::f16);
  EXPECT_THROW(c.all_reduce(i, ReduceOp::avg), zt::Error);
  EXPECT_THROW(c.all_reduce(l), zt::Error);
  Tensor undefined;
  EXPECT_THROW(c.all_reduce(undefined), zt::Error);
  EXPECT_THROW(c.reduce_scatter(small, f), zt::Error);
  EXPECT_THROW(c.reduce_scatter(half, f), zt::Error);
  EXPECT_THROW(c.all_gather(f, small), zt::Error);
  EXPECT_THROW(c.broadcast(f, w), zt::Error);
  EXPECT_THROW(c.broadcast(f, -1), zt::Error);
  std::vector<int64_t> counts(static_cast<size_t>(w), 8);
  Tensor v_in = Tensor::zeros({8 * w});
  EXPECT_THROW(c.reduce_scatter_v(v_in, f, std::vector<int64_t>(w + 1, 8)), zt::Error);
  EXPECT_THROW(c.reduce_scatter_v(small, f, counts), zt::Error);  // counts do not add up
  Tensor v_out = v_in.flat_view(0, {8});
  EXPECT_THROW(c.reduce_scatter_v(v_in, v_out, counts), zt::Error);  // overlap
  counts[0] = -1;
  EXPECT_THROW(c.reduce_scatter_v(v_in, f, counts), zt::Error);
  c.barrier();  // and the communicator still works
  c.all_reduce(f)->wait();
}

}  // namespace
}  // namespace zt::comm::test
