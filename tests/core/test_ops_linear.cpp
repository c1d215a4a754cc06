// tests/core/test_ops_linear.cpp: the CPU paths of issue #5's additions to core/ops.h: matmul with
// 16-bit operands (widened to f32 on the CPU) and the linear ops (linear_forward with bias and
// GELU, linear_backward, linear_backward_dgelu), which on the CPU are the composition of matmul,
// bias_add, gelu_forward/backward and bias_grad_acc. tests/gpu/test_cuda_blas.cpp checks the CUDA
// versions (fused cuBLASLt epilogues) against these.
//
// Tolerances: the linear ops must equal their composition bit for bit (they run the same ops in the
// same order); against the double-precision reference, kFwdTol (1e-5, max-norm relative). Widened
// matmul is the f32 matmul of the 16-bit values: equal to it bit for bit.
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/core/op_test_util.h"
#include "tests/core/reference.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace zt {
namespace {

using namespace zt::test;

// Exact equality of two tensors' values (NaN never equal).
::testing::AssertionResult same_values(const Tensor& got, const Tensor& want) {
  const std::vector<float> g = got.to(DType::f32).to_vector(), w = want.to(DType::f32).to_vector();
  if (g.size() != w.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < g.size(); ++i)
    if (!(g[i] == w[i]))
      return ::testing::AssertionFailure() << "element " << i << ": " << g[i] << " vs " << w[i];
  return ::testing::AssertionSuccess();
}

// =================================================================================================
// matmul with 16-bit operands
// =================================================================================================
TEST(CoreOpsMixed, SixteenBitOperandsAreWidenedToF32) {
  std::mt19937_64 rng(7);
  for (DType dt : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dt));
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t M = 33, K = 65, N = 17;
        Tensor a = random_tensor(ta ? Shape{K, M} : Shape{M, K}, rng).to(dt);
        Tensor b = random_tensor(tb ? Shape{N, K} : Shape{K, N}, rng).to(dt);
        Tensor a32 = a.to(DType::f32), b32 = b.to(DType::f32);
        // f32 out, beta 1: the weight-gradient case (accumulate into an f32 buffer).
        Tensor acc = random_tensor({M, N}, rng), want = acc.clone();
        ops::matmul(a, b, acc, ta, tb, 0.5f, 1.f);
        ops::matmul(a32, b32, want, ta, tb, 0.5f, 1.f);
        EXPECT_TRUE(same_values(acc, want));
        // 16-bit out: the f32 result rounded once, with and without beta.
        for (float beta : {0.f, 0.75f}) {
          Tensor o16 = random_tensor({M, N}, rng).to(dt), o32 = o16.to(DType::f32);
          ops::matmul(a, b, o16, ta, tb, 1.f, beta);
          ops::matmul(a32, b32, o32, ta, tb, 1.f, beta);
          EXPECT_EQ(o16.dtype(), dt);
          EXPECT_TRUE(same_values(o16, o32.to(dt))) << "beta " << beta;
        }
      }
  }
  // Batched with a shared b, 16-bit in, f32 out.
  Tensor a = random_tensor({3, 7, 9}, rng).to(DType::bf16),
         b = random_tensor({9, 5}, rng).to(DType::bf16);
  Tensor out = nan_tensor({3, 7, 5});
  ops::matmul(a, b, out);
  EXPECT_TRUE(close(out,
                    ref_matmul(to_double(a.to(DType::f32)), to_double(b.to(DType::f32)), 3, 7, 9, 5,
                               false, false, true),
                    kFwdTol, "batched bf16 -> f32"));
}

TEST(CoreOpsMixed, DtypeRulesNameTheOffender) {
  Tensor a = Tensor::zeros({4, 3}, DType::bf16), b = Tensor::zeros({3, 5}, DType::f16);
  Tensor out = Tensor::zeros({4, 5});
  EXPECT_ZT_ERROR(ops::matmul(a, b, out), "must share one dtype");
  Tensor b16 = Tensor::zeros({3, 5}, DType::bf16), o16 = Tensor::zeros({4, 5}, DType::f16);
  EXPECT_ZT_ERROR(ops::matmul(a, b16, o16), "or f32");  // bf16 in, f16 out
  Tensor a32 = Tensor::zeros({4, 3}), b32 = Tensor::zeros({3, 5}),
         ob = Tensor::zeros({4, 5}, DType::bf16);
  EXPECT_ZT_ERROR(ops::matmul(a32, b32, ob), "or f32");  // f32 in, bf16 out
}

// =================================================================================================
// linear ops
// =================================================================================================
struct LinCase {
  Shape lead;  // x's leading dims
  int64_t K, N;
};
const std::vector<LinCase> kLinCases = {
    {{1}, 1, 1}, {{7}, 5, 3}, {{2, 5}, 33, 24}, {{513}, 64, 130}};

TEST(CoreOpsLinear, ForwardIsMatmulBiasGelu) {
  std::mt19937_64 rng(11);
  for (const LinCase& c : kLinCases) {
    Shape xs = c.lead, ys = c.lead;
    xs.push_back(c.K);
    ys.push_back(c.N);
    const int64_t rows = shape_numel(c.lead);
    SCOPED_TRACE(detail::str_cat("rows ", rows, " K ", c.K, " N ", c.N));
    Tensor x = random_tensor(xs, rng, -2.f, 2.f), w = random_tensor({c.N, c.K}, rng);
    Tensor bias = random_tensor({c.N}, rng);
    // The composition, by hand.
    Tensor want_pre = Tensor::empty({rows, c.N}), want_out = Tensor::empty({rows, c.N});
    ops::matmul(x.view({rows, c.K}), w, want_pre, false, true);
    ops::bias_add(want_pre, bias);
    ops::gelu_forward(want_pre, want_out);

    Tensor out = nan_tensor(ys);
    ops::linear_forward(x, w, bias, out);
    EXPECT_TRUE(same_values(out, want_pre)) << "bias";
    EXPECT_TRUE(close(out, ref_linear(to_double(x), to_double(w), to_double(bias), rows, c.K, c.N),
                      kFwdTol, "linear vs reference"));

    Tensor pre = nan_tensor(ys), act = nan_tensor(ys);
    ops::linear_forward(x, w, bias, act, &pre);
    EXPECT_TRUE(same_values(pre, want_pre)) << "gelu pre";
    EXPECT_TRUE(same_values(act, want_out)) << "gelu out";
    EXPECT_TRUE(close(
        act, ref_gelu(ref_linear(to_double(x), to_double(w), to_double(bias), rows, c.K, c.N)),
        kFwdTol, "linear + gelu vs reference"));

    Tensor nob = nan_tensor(ys);  // no bias (an undefined tensor)
    ops::linear_forward(x, w, Tensor(), nob);
    EXPECT_TRUE(close(nob, ref_linear(to_double(x), to_double(w), {}, rows, c.K, c.N), kFwdTol,
                      "linear without bias"));
  }
}

TEST(CoreOpsLinear, BackwardWritesDxAndAccumulatesDwDbias) {
  std::mt19937_64 rng(12);
  for (const LinCase& c : kLinCases) {
    Shape xs = c.lead, ys = c.lead;
    xs.push_back(c.K);
    ys.push_back(c.N);
    const int64_t rows = shape_numel(c.lead);
    SCOPED_TRACE(detail::str_cat("rows ", rows, " K ", c.K, " N ", c.N));
    Tensor x = random_tensor(xs, rng), w = random_tensor({c.N, c.K}, rng);
    Tensor dout = random_tensor(ys, rng);
    Tensor dx = nan_tensor(xs);
    Tensor dw = random_tensor({c.N, c.K}, rng), db = random_tensor({c.N}, rng);
    const Vec dw0 = to_double(dw), db0 = to_double(db);
    ops::linear_backward(dout, x, w, &dx, dw, &db);
    // References in double: dx = dout W, dW += dout^T x, db += column sums of dout.
    const Vec X = to_double(x), W = to_double(w), D = to_double(dout);
    EXPECT_TRUE(close(dx, ref_matmul(D, W, 1, rows, c.N, c.K, false, false, true), kFwdTol, "dx"));
    Vec dw_want = ref_matmul(D, X, 1, c.N, rows, c.K, true, false, true);
    for (size_t i = 0; i < dw_want.size(); ++i) dw_want[i] += dw0[i];
    EXPECT_TRUE(close(dw, dw_want, kFwdTol, "dweight accumulated"));
    Vec db_want = db0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < c.N; ++j) db_want[j] += D[r * c.N + j];
    EXPECT_TRUE(close(db, db_want, kFwdTol, "dbias accumulated"));

    // dx and dbias are optional: null skips them, dw still accumulates.
    Tensor dw2 = Tensor::zeros({c.N, c.K});
    ops::linear_backward(dout, x, w, nullptr, dw2, nullptr);
    EXPECT_TRUE(close(dw2, ref_matmul(D, X, 1, c.N, rows, c.K, true, false, true), kFwdTol,
                      "dweight alone"));
  }
}

TEST(CoreOpsLinear, BackwardDgeluIsMatmulThenGeluBackward) {
  std::mt19937_64 rng(13);
  for (const LinCase& c : kLinCases) {
    // This layer: in K (its input was gelu(pre), pre [rows, K]), out N.
    Shape ps = c.lead, ys = c.lead;
    ps.push_back(c.K);
    ys.push_back(c.N);
    const int64_t rows = shape_numel(c.lead);
    SCOPED_TRACE(detail::str_cat("rows ", rows, " K ", c.K, " N ", c.N));
    Tensor pre = random_tensor(ps, rng, -3.f, 3.f), w = random_tensor({c.N, c.K}, rng);
    Tensor dout = random_tensor(ys, rng);
    Tensor dh = Tensor::empty(ps), want = Tensor::empty(ps);
    Tensor dh2 = dh.view({rows, c.K});
    ops::matmul(dout.view({rows, c.N}), w, dh2);
    ops::gelu_backward(pre, dh, want);
    Tensor dpre = nan_tensor(ps);
    ops::linear_backward_dgelu(dout, w, pre, dpre);
    EXPECT_TRUE(same_values(dpre, want));
    // And against the double reference: gelu'(pre) * (dout W), gelu' by central differences.
    const Vec P = to_double(pre);
    Vec g = ref_matmul(to_double(dout), to_double(w), 1, rows, c.N, c.K, false, false, true);
    for (size_t i = 0; i < g.size(); ++i)
      g[i] *= (ref_gelu1(P[i] + 1e-6) - ref_gelu1(P[i] - 1e-6)) / 2e-6;
    EXPECT_TRUE(close(dpre, g, 1e-4, "dpre vs reference"));
  }
}

TEST(CoreOpsLinear, ErrorsNameTheArgument) {
  Tensor x = Tensor::zeros({4, 3}), w = Tensor::zeros({5, 3}), out = Tensor::zeros({4, 5});
  Tensor bias = Tensor::zeros({5});
  Tensor w_bad = Tensor::zeros({5, 4});
  EXPECT_ZT_ERROR(ops::linear_forward(x, w_bad, bias, out), "K = 4");
  Tensor out_bad = Tensor::zeros({4, 6});
  EXPECT_ZT_ERROR(ops::linear_forward(x, w, bias, out_bad), "out");
  Tensor bias_bad = Tensor::zeros({6});
  EXPECT_ZT_ERROR(ops::linear_forward(x, w, bias_bad, out), "bias");
  Tensor bias16 = Tensor::zeros({5}, DType::bf16);
  EXPECT_ZT_ERROR(ops::linear_forward(x, w, bias16, out), "share one dtype");
  EXPECT_ZT_ERROR(ops::linear_forward(x, w, bias, out, &out), "alias");
  Tensor sq = Tensor::zeros({3, 3});
  EXPECT_ZT_ERROR(ops::linear_forward(sq, sq, Tensor(), sq), "alias");  // out is x and the weight
  Tensor pre_bad = Tensor::zeros({4, 4});
  EXPECT_ZT_ERROR(ops::linear_forward(x, w, bias, out, &pre_bad), "gelu_pre");
  Tensor dx = Tensor::zeros({4, 3}), dw = Tensor::zeros({5, 3}), db = Tensor::zeros({5});
  EXPECT_ZT_ERROR(ops::linear_backward(out, dx, w, &dx, dw, nullptr), "alias");  // dx is x
  Tensor dw_bad = Tensor::zeros({3, 5});
  EXPECT_ZT_ERROR(ops::linear_backward(out, x, w, &dx, dw_bad, &db), "dweight");
  Tensor db_bad = Tensor::zeros({4});
  EXPECT_ZT_ERROR(ops::linear_backward(out, x, w, &dx, dw, &db_bad), "dbias");
  Tensor dout_bad = Tensor::zeros({3, 5});
  EXPECT_ZT_ERROR(ops::linear_backward(dout_bad, x, w, &dx, dw, &db), "dout");
  Tensor pre = Tensor::zeros({4, 3});
  EXPECT_ZT_ERROR(ops::linear_backward_dgelu(out, w, pre, pre), "alias");
  Tensor dpre_bad = Tensor::zeros({4, 5});
  EXPECT_ZT_ERROR(ops::linear_backward_dgelu(out, w, pre, dpre_bad), "dpre");
}

}  // namespace
}  // namespace zt
