// tests/core/test_ops.cpp: every op of core/ops.h against the double-precision reference of
// tests/core/reference.h, and every backward against central finite differences of that reference.
// This file: elementwise ops, reductions, matmul, bias, errors and thread-count reproducibility;
// test_ops_nn.cpp: GELU, LayerNorm, softmax, attention, embedding, cross-entropy.
//
// Sizes are odd on purpose (rows 1, 7, 33; features 1, 5, 129) so that vector tails are exercised,
// plus one large case (4096 x 256, above kParallelMin) so that the threaded paths run. Loss for the
// gradient checks: L = sum(out * W) with W random, i.e. dout = W.
//
// Tolerances, as max-norm relative errors (max |got - want| / max |want|, see reference.h):
//   forward values of every op                       1e-5 (f32 rounding, Eigen's vectorized
//   exp/tanh) elementwise ops (add, axpy, scale, bias_add)      1e-6 (one or two f32 roundings)
//   gradients from a backward op vs finite diffs      1e-4
//   sum_squares (accumulates in double)               1e-10
// The checks of accumulate semantics ("outputs =, parameter gradients +=", ops.h) fill outputs
// with NaN first (an op that reads its output, even as 0 * out, then fails) and parameter
// gradients with random values (which must be kept and added to).
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/core/op_test_util.h"
#include "tests/core/reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace zt {
namespace {

using namespace zt::test;

// The oracle's own tools, on cases with known answers: close() must reject a single wrong element
// and fd_grad() must reproduce an analytic gradient.
TEST(CoreOps, ReferenceSelfCheck) {
  Vec want = {1.0, -2.0, 3.0, 0.5};
  std::vector<float> got = {1.f, -2.f, 3.f, 0.5f};
  EXPECT_TRUE(close(got, want, 0, "identical"));
  got[3] = 0.5f + 1e-3f;
  EXPECT_FALSE(close(got, want, 1e-4, "one element off by 3e-4 of the scale"));
  got[3] = kNaN;
  EXPECT_FALSE(close(got, want, 1e-4, "NaN"));
  Vec x = {0.3, -1.2, 2.0};
  Vec g = fd_grad(x, [&] { return x[0] * x[0] + std::sin(x[1]) * x[2]; });
  EXPECT_NEAR(g[0], 0.6, 1e-8);
  EXPECT_NEAR(g[1], std::cos(-1.2) * 2.0, 1e-8);
  EXPECT_NEAR(g[2], std::sin(-1.2), 1e-8);
  EXPECT_EQ(x, (Vec{0.3, -1.2, 2.0}));  // restored exactly
  // The reference GELU is the tanh form: gelu(1) = 0.8411919906082768.
  EXPECT_NEAR(ref_gelu1(1.0), 0.8411919906082768, 1e-15);
}

// =================================================================================================
// elementwise ops and fills
// =================================================================================================
const std::vector<int64_t> kLens = {1, 7, 33 * 129, 4096 * 256 + 3};

TEST(CoreOps, Fill) {
  for (int64_t n : kLens) {
    Tensor t = nan_tensor({n});
    ops::fill(t, -2.5f);
    std::vector<float> v = t.to_vector();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(v[i], -2.5f) << n << " " << i;
  }
  // Fill only touches the view.
  Tensor big = Tensor::zeros({10});
  Tensor mid = big.flat_view(3, {4});
  ops::fill(mid, 1.f);
  EXPECT_EQ(big.to_vector(), (std::vector<float>{0, 0, 0, 1, 1, 1, 1, 0, 0, 0}));
  // 16-bit fills store the rounded bits.
  Tensor h = Tensor::zeros({5}, DType::f16), b = Tensor::zeros({5}, DType::bf16);
  ops::fill(h, 0.1f);
  ops::fill(b, 0.1f);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(h.data_u16()[i], f32_to_f16(0.1f));
    EXPECT_EQ(b.data_u16()[i], f32_to_bf16(0.1f));
  }
}

TEST(CoreOps, AddAddAccAxpyScale) {
  std::mt19937_64 rng(1);
  for (int64_t n : kLens) {
    SCOPED_TRACE(detail::str_cat("n = ", n));
    Tensor a = random_tensor({n}, rng), b = random_tensor({n}, rng);
    Vec da = to_double(a), db = to_double(b);
    Vec want(n);

    Tensor out = nan_tensor({n});
    ops::add(a, b, out);
    for (int64_t i = 0; i < n; ++i) want[i] = da[i] + db[i];
    EXPECT_TRUE(close(out, want, kElemTol, "add"));

    Tensor y = b.clone();
    ops::add_acc(a, y);  // y += a
    EXPECT_TRUE(close(y, want, kElemTol, "add_acc"));

    y = b.clone();
    ops::axpy(-0.75f, a, y);
    for (int64_t i = 0; i < n; ++i) want[i] = db[i] - 0.75 * da[i];
    EXPECT_TRUE(close(y, want, kElemTol, "axpy"));

    y = a.clone();
    ops::scale(y, 3.25f);
    for (int64_t i = 0; i < n; ++i) want[i] = 3.25 * da[i];
    EXPECT_TRUE(close(y, want, kElemTol, "scale"));
  }
}

TEST(CoreOps, AddOutMayAliasAnInput) {
  std::mt19937_64 rng(2);
  for (int64_t n : kLens) {
    Tensor a = random_tensor({n}, rng), b = random_tensor({n}, rng);
    Vec want(n);
    Vec da = to_double(a), db = to_double(b);
    for (int64_t i = 0; i < n; ++i) want[i] = da[i] + db[i];
    Tensor a2 = a.clone(), b2 = b.clone();
    ops::add(a2, b, a2);
    EXPECT_TRUE(close(a2, want, kElemTol, "add out=a"));
    ops::add(a, b2, b2);
    EXPECT_TRUE(close(b2, want, kElemTol, "add out=b"));
    Tensor c = a.clone();
    ops::add(c, c, c);  // doubling in place
    for (int64_t i = 0; i < n; ++i) want[i] = 2 * da[i];
    EXPECT_TRUE(close(c, want, 0, "add out=a=b"));
  }
}

TEST(CoreOps, ElementwiseOnViewsTouchOnlyTheView) {
  Tensor big = Tensor::from_vector({1, 2, 3, 4, 5, 6, 7, 8}, {8});
  Tensor v = big.flat_view(2, {3});
  ops::scale(v, 10.f);
  Tensor ones = Tensor::from_vector({1, 1, 1}, {3});
  Tensor w = big.flat_view(5, {3});
  ops::axpy(2.f, ones, w);
  EXPECT_EQ(big.to_vector(), (std::vector<float>{1, 2, 30, 40, 50, 8, 9, 10}));
}

TEST(CoreOps, SumSquares) {
  std::mt19937_64 rng(3);
  for (int64_t n : kLens) {
    Tensor a = random_tensor({n}, rng, -3.f, 3.f);
    double want = 0;
    for (double x : to_double(a)) want += x * x;
    double got = ops::sum_squares(a);
    EXPECT_NEAR(got, want, 1e-10 * want) << n;
    EXPECT_EQ(ops::sum_squares(a), got) << "not deterministic, n = " << n;
  }
  // Values whose squares overflow f32 but not double: the sum is in double.
  const float huge = 1e20f;
  Tensor big = Tensor::from_vector({huge, -huge, 3.f}, {3});
  const double want_big = 2.0 * static_cast<double>(huge) * huge + 9.0;
  EXPECT_NEAR(ops::sum_squares(big), want_big, 1e-12 * want_big);
  EXPECT_TRUE(std::isfinite(ops::sum_squares(big)));
  EXPECT_EQ(ops::sum_squares(Tensor::zeros({0})), 0.0);
}

TEST(CoreOps, AllFinite) {
  for (int64_t n : kLens) {
    Tensor a = Tensor::zeros({n});
    ops::fill(a, 3.f);
    a.data<float>()[n / 2] = std::numeric_limits<float>::max();
    a.data<float>()[0] = -std::numeric_limits<float>::max();
    EXPECT_TRUE(ops::all_finite(a)) << n;
    for (int64_t pos : {int64_t{0}, n / 2, n - 1})
      for (float bad : {kNaN, INFINITY, -INFINITY}) {
        Tensor b = a.clone();
        b.data<float>()[pos] = bad;
        EXPECT_FALSE(ops::all_finite(b)) << "n " << n << " pos " << pos << " value " << bad;
      }
  }
  // A non-finite value outside a view does not count.
  Tensor t = Tensor::zeros({10});
  t.data<float>()[9] = INFINITY;
  EXPECT_TRUE(ops::all_finite(t.flat_view(0, {9})));
  EXPECT_FALSE(ops::all_finite(t));
}

// =================================================================================================
// matmul
// =================================================================================================
struct MM {
  Shape a_batch;  // leading dims of a and out ({} for plain 2-D)
  bool shared_b;  // b 2-D even when a is batched
  int64_t M, K, N;
};

void check_matmul(const MM& c, bool ta, bool tb, float alpha, float beta, uint64_t seed) {
  std::mt19937_64 rng(seed);
  int64_t batch = shape_numel(c.a_batch);
  Shape as = c.a_batch, bs = c.shared_b ? Shape{} : c.a_batch, os = c.a_batch;
  as.push_back(ta ? c.K : c.M);
  as.push_back(ta ? c.M : c.K);
  bs.push_back(tb ? c.N : c.K);
  bs.push_back(tb ? c.K : c.N);
  os.push_back(c.M);
  os.push_back(c.N);
  Tensor a = random_tensor(as, rng), b = random_tensor(bs, rng);
  Tensor out = beta == 0.f ? nan_tensor(os) : random_tensor(os, rng);
  Vec out0 = beta == 0.f ? Vec(shape_numel(os), 0.0) : to_double(out);
  ops::matmul(a, b, out, ta, tb, alpha, beta);
  Vec want = ref_matmul(to_double(a), to_double(b), batch, c.M, c.K, c.N, ta, tb,
                        c.shared_b || c.a_batch.empty());
  for (size_t i = 0; i < want.size(); ++i) want[i] = alpha * want[i] + beta * out0[i];
  EXPECT_TRUE(close(out, want, kFwdTol,
                    detail::str_cat("matmul a ", a.str(), " b ", b.str(), " ta ", ta, " tb ", tb,
                                    " alpha ", alpha, " beta ", beta)));
}

TEST(CoreOps, MatmulAllTransposeCombos) {
  const std::vector<MM> cases = {
      {{}, false, 1, 1, 1},   {{}, false, 7, 5, 33},       {{}, false, 33, 129, 7},
      {{}, false, 5, 1, 129}, {{}, false, 1024, 256, 129},  // large: Eigen's threaded GEMM
  };
  uint64_t seed = 10;
  for (const MM& c : cases)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) check_matmul(c, ta, tb, 1.f, 0.f, seed++);
}

TEST(CoreOps, MatmulBatchedAndSharedB) {
  const std::vector<MM> cases = {
      {{3}, false, 7, 5, 33},
      {{2, 3}, false, 5, 9, 7},
      {{3}, true, 7, 5, 33},
      {{2, 3}, true, 33, 5, 7},
      {{8}, false, 64, 33, 65},  // batch >= threads and enough work: one
                                 // product per thread
      {{8}, true, 64, 33, 65},
  };
  uint64_t seed = 100;
  for (const MM& c : cases)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) check_matmul(c, ta, tb, 1.f, 0.f, seed++);
}

TEST(CoreOps, MatmulAlphaBeta) {
  uint64_t seed = 200;
  for (const MM& c : {MM{{}, false, 7, 5, 33}, MM{{3}, false, 7, 5, 33}, MM{{3}, true, 9, 4, 6},
                      MM{{}, false, 300, 200, 129}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        check_matmul(c, ta, tb, 0.5f, 1.f, seed++);  // accumulate into out
        check_matmul(c, ta, tb, -1.25f, 0.75f, seed++);
        check_matmul(c, ta, tb, 2.f, 0.f, seed++);  // out is NaN before: beta 0 must not read it
      }
}

TEST(CoreOps, MatmulShapeErrors) {
  Tensor a = Tensor::zeros({8, 3}), b = Tensor::zeros({4, 5}), out = Tensor::zeros({8, 5});
  EXPECT_ZT_ERROR(ops::matmul(a, b, out), "matmul");  // K 3 vs 4
  Tensor b2 = Tensor::zeros({3, 5}), bad_out = Tensor::zeros({8, 6});
  EXPECT_ZT_ERROR(ops::matmul(a, b2, bad_out), "matmul");    // out N
  EXPECT_ZT_ERROR(ops::matmul(a, b2, out, true), "matmul");  // a^T is [3, 8]
  Tensor v = Tensor::zeros({3});
  EXPECT_ZT_ERROR(ops::matmul(a, v, out), "matmul");  // 1-D
  Tensor ab = Tensor::zeros({2, 8, 3}), bb = Tensor::zeros({3, 3, 5}),
         ob = Tensor::zeros({2, 8, 5});
  EXPECT_ZT_ERROR(ops::matmul(ab, bb, ob), "matmul");  // batch 2 vs 3
  Tensor ob3 = Tensor::zeros({3, 8, 5});
  EXPECT_ZT_ERROR(ops::matmul(ab, b2, ob3), "matmul");  // out batch
  Tensor h = Tensor::zeros({8, 3}, DType::f16);
  EXPECT_ZT_ERROR(ops::matmul(h, b2, out), "matmul");  // dtype
  Tensor sq = Tensor::zeros({3, 3}), sq2 = Tensor::zeros({3, 3});
  EXPECT_ZT_ERROR(ops::matmul(sq, sq2, sq), "matmul");   // out aliases a
  EXPECT_ZT_ERROR(ops::matmul(sq, sq2, sq2), "matmul");  // out aliases b
}

// =================================================================================================
// bias
// =================================================================================================
TEST(CoreOps, BiasAddAndBiasGradAcc) {
  std::mt19937_64 rng(4);
  for (const RC& s : kSizes) {
    SCOPED_TRACE(size_str(s));
    Tensor x = random_tensor({s.rows, s.cols}, rng), bias = random_tensor({s.cols}, rng);
    Vec dx = to_double(x), dbias = to_double(bias);
    Tensor y = x.clone();
    ops::bias_add(y, bias);
    Vec want(dx.size());
    for (int64_t r = 0; r < s.rows; ++r)
      for (int64_t c = 0; c < s.cols; ++c) want[r * s.cols + c] = dx[r * s.cols + c] + dbias[c];
    EXPECT_TRUE(close(y, want, kElemTol, "bias_add"));

    // bias_grad_acc is bias_add's backward for the bias: L = sum(W * (x + bias)).
    Tensor W = random_tensor({s.rows, s.cols}, rng);
    Vec dW = to_double(W);
    Vec grad(s.cols, 0.0);
    if (!is_large(s)) {
      Vec bv = dbias;
      grad = fd_grad(bv, [&] {
        double L = 0;
        for (int64_t r = 0; r < s.rows; ++r)
          for (int64_t c = 0; c < s.cols; ++c)
            L += dW[r * s.cols + c] * (dx[r * s.cols + c] + bv[c]);
        return L;
      });
    } else {  // linear: the column sums are the exact gradient
      for (int64_t r = 0; r < s.rows; ++r)
        for (int64_t c = 0; c < s.cols; ++c) grad[c] += dW[r * s.cols + c];
    }
    Tensor g = Tensor::zeros({s.cols});
    ops::bias_grad_acc(W, g);
    EXPECT_TRUE(close(g, grad, kGradTol, "bias_grad_acc"));
    // Accumulates: a second call from non-zero content adds.
    Tensor g0 = random_tensor({s.cols}, rng);
    Vec want0 = to_double(g0);
    for (int64_t c = 0; c < s.cols; ++c) want0[c] += grad[c];
    ops::bias_grad_acc(W, g0);
    EXPECT_TRUE(close(g0, want0, kGradTol, "bias_grad_acc (+=)"));
  }
  // Rows are the leading dims flattened.
  Tensor x3 = Tensor::zeros({2, 3, 4}), b4 = Tensor::from_vector({1, 2, 3, 4}, {4});
  ops::bias_add(x3, b4);
  EXPECT_EQ(x3.to_vector()[23], 4.f);
  Tensor db = Tensor::zeros({4});
  ops::bias_grad_acc(x3, db);
  EXPECT_EQ(db.to_vector(), (std::vector<float>{6, 12, 18, 24}));
}

TEST(CoreOps, BiasShapeErrors) {
  Tensor x = Tensor::zeros({4, 5}), b = Tensor::zeros({4});
  EXPECT_ZT_ERROR(ops::bias_add(x, b), "bias_add");
  EXPECT_ZT_ERROR(ops::bias_grad_acc(x, b), "bias_grad_acc");
}

// =================================================================================================
// errors name the op; dtypes; reproducibility
// =================================================================================================
TEST(CoreOps, ElementwiseErrorsNameTheOp) {
  Tensor a = Tensor::zeros({5}), b = Tensor::zeros({6}), h = Tensor::zeros({5}, DType::f16);
  Tensor o = Tensor::zeros({5});
  EXPECT_ZT_ERROR(ops::add(a, b, o), "add");
  EXPECT_ZT_ERROR(ops::add(a, a, b), "add");
  EXPECT_ZT_ERROR(ops::add(a, h, o), "add");
  EXPECT_ZT_ERROR(ops::add_acc(a, b), "add_acc");
  EXPECT_ZT_ERROR(ops::axpy(1.f, a, b), "axpy");
  EXPECT_ZT_ERROR(ops::axpy(1.f, h, a), "axpy");
  EXPECT_ZT_ERROR(ops::scale(h, 2.f), "scale");
  EXPECT_ZT_ERROR(ops::sum_squares(h), "sum_squares");
  EXPECT_ZT_ERROR(ops::all_finite(h), "all_finite");
  EXPECT_ZT_ERROR(ops::gelu_forward(a, b), "gelu");
  EXPECT_ZT_ERROR(ops::gelu_backward(a, a, b), "gelu");
  Tensor undefined;
  EXPECT_ZT_ERROR(ops::fill(undefined, 0.f), "fill");
  EXPECT_ZT_ERROR(ops::copy(a, b), "copy");
}

TEST(CoreOps, ThreadCountDoesNotChangeReductions) {
  // nn_ops.cpp and elementwise.cpp promise the same bits for any thread count for the reductions
  // into parameter gradients and for sum_squares (the gradient norm).
  std::mt19937_64 rng(16);
  const int64_t R = 4096, C = 256, V = 50;
  Tensor x = random_tensor({R, C}, rng), D = random_tensor({R, C}, rng);
  Tensor w = random_tensor({C}, rng), b = random_tensor({C}, rng);
  std::vector<int32_t> idv(R);
  for (auto& i : idv) i = static_cast<int32_t>(rng() % V);
  Tensor ids = ids_tensor(idv, {R});
  auto run = [&](int threads) {
    ops::set_num_threads(threads);
    Tensor out = Tensor::empty({R, C}), mean = Tensor::empty({R}), rstd = Tensor::empty({R});
    ops::layernorm_forward(x, w, b, out, mean, rstd);
    Tensor dx = Tensor::empty({R, C}), dw = Tensor::zeros({C}), db = Tensor::zeros({C});
    ops::layernorm_backward(D, x, w, mean, rstd, dx, dw, db);
    Tensor bg = Tensor::zeros({C});
    ops::bias_grad_acc(D, bg);
    Tensor dt = Tensor::zeros({V, C});
    ops::embedding_backward_acc(ids, D, dt);
    double ss = ops::sum_squares(x);
    std::vector<float> all;
    for (const Tensor& t : {out, dx, dw, db, bg, dt}) {
      std::vector<float> v = t.to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    return std::make_pair(all, ss);
  };
  int saved = ops::num_threads();
  EXPECT_GE(saved, 1);
  auto r1 = run(1), r2 = run(2), r4 = run(4), r4b = run(4);
  ops::set_num_threads(saved);
  EXPECT_EQ(r4.first, r4b.first) << "not reproducible with the same thread count";
  EXPECT_EQ(r4.second, r4b.second);
  EXPECT_EQ(r1.first, r2.first) << "1 vs 2 threads";
  EXPECT_EQ(r1.first, r4.first) << "1 vs 4 threads";
  EXPECT_EQ(r1.second, r4.second) << "sum_squares, 1 vs 4 threads";
  EXPECT_THROW(ops::set_num_threads(0), Error);
}

// Empty operands: m, n or k = 0 is legal (an empty batch, a layer of width 0): no division by zero,
// nothing written for an empty out, and out = beta * out for an empty sum (k = 0).
TEST(CoreOps, MatmulWithEmptyDimensions) {
  Tensor a0 = Tensor::zeros({0, 4}), b = Tensor::zeros({4, 3}), out0 = Tensor::zeros({0, 3});
  ops::matmul(a0, b, out0);
  EXPECT_EQ(out0.numel(), 0);
  Tensor a = Tensor::zeros({2, 0}), bk = Tensor::zeros({0, 3});
  Tensor out = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  ops::matmul(a, bk, out, false, false, 1.f, 0.5f);
  EXPECT_EQ(out.to_vector(), (std::vector<float>{0.5f, 1, 1.5f, 2, 2.5f, 3}));
  ops::matmul(a, bk, out);
  EXPECT_EQ(out.to_vector(), std::vector<float>(6, 0.f));
}

}  // namespace
}  // namespace zt
