// tests/gpu/test_cuda_blas.cpp: issue #5's cuBLASLt work against the CPU backend (the oracle,
// CONVENTIONS.md 11): matmul with 16-bit a, b and an f32 out (the mixed-precision weight gradient,
// beta = 1 accumulation), the fused linear ops (bias, GELU with its pre-activation, DGELU, BGRADB),
// the GELU epilogue's formula, and the plan cache (core/cuda/blas_lt.h's counters).
//
// Inputs are drawn in f32 on the host and rounded to the dtype under test, so both backends see the
// same values; the CPU computes in f32 on those values. Comparisons: |got - want| <= tol *
// max|want| over the output (products cancel: elementwise relative errors mean nothing near 0).
// Tolerances:
//   16-bit a, b -> f32 out      1e-4: products of 16-bit values are exact in f32, so only the f32
//                               sums differ (another order; K <= 768 here gives ~1e-6 typically);
//   16-bit out                  2 units in the last place of the dtype (one rounding of the sum);
//   through GELU or DGELU        4 units (the unfused path rounds the product, then the GELU);
//                               f32 out: 1e-3 (cuBLASLt may evaluate tanh with a fast
//                               approximation, ~2^-11 relative);
//   GELU epilogue on exact pre  its error projected on (erf form - tanh form) must be < 0.25 of
//                               that gap (the tanh form gives ~0, the erf form 1), and within 2e-3
//                               of the tanh form everywhere (fast tanh allowed).
// Without a GPU every test here skips itself with the reason.
#include "core/cuda/blas_lt.h"
#include "core/cuda/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gpu/gpu_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using zt::Device;
using zt::DType;
using zt::Tensor;
namespace ops = zt::ops;
using zt::gputest::rand_host;
using zt::gputest::rounded;
using zt::gputest::to_gpu;
using zt::gputest::to_host;

float ulp_tol(DType dt, float ulps) {
  switch (dt) {
    case DType::bf16:
      return ulps / 256;
    case DType::f16:
      return ulps / 2048;
    default:
      return 1e-5f * ulps;
  }
}

// |gpu - cpu| <= tol * max|cpu| elementwise (tol absolute when `absolute`).
void expect_close(const Tensor& gpu, const Tensor& cpu, float tol, const std::string& what,
                  bool absolute = false) {
  const std::vector<float> g = to_host(gpu).to_vector(), c = cpu.to(DType::f32).to_vector();
  ASSERT_EQ(g.size(), c.size()) << what;
  float maxabs = 0.f;
  for (float v : c) maxabs = std::max(maxabs, std::fabs(v));
  const float lim = absolute ? tol : tol * std::max(maxabs, 1e-6f);
  int bad = 0;
  float worst = 0.f;
  for (size_t i = 0; i < g.size(); ++i) {
    const float err = std::fabs(g[i] - c[i]);
    worst = std::max(worst, err);
    if (!(err <= lim) && ++bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: gpu " << g[i] << ", cpu " << c[i] << " (limit "
                    << lim << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": worst error " << worst << " (limit " << lim << ") over "
                    << g.size() << " values";
}

class CudaBlas : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (zt::cuda::device_count() == 0) GTEST_SKIP() << "no GPU: " << zt::cuda::device_summary();
    zt::cuda::set_fused_epilogues(true);
  }
  void TearDown() override { zt::cuda::set_fused_epilogues(true); }
  DType dt() const { return GetParam(); }
};
// The 16-bit dtypes only (the mixed cases).
class CudaBlas16 : public CudaBlas {};

// ---- matmul: 16-bit a, b into f32 out ---------------------------------------------------------
struct Case {
  int64_t batch, m, n, k;
  bool ta, tb, b_shared;
  float alpha, beta;
};

TEST_P(CudaBlas16, MatmulIntoF32) {
  const Case cases[] = {
      {1, 33, 17, 64, false, false, false, 1.f, 0.f},
      {1, 33, 17, 64, true, false, false, 1.f, 1.f},
      {1, 33, 17, 64, false, true, false, 1.f, 1.f},
      {1, 33, 17, 64, true, true, false, 0.5f, 1.f},
      {1, 1, 1, 1, false, false, false, 1.f, 0.f},
      {1, 7, 5, 3, true, false, false, 2.f, 0.75f},
      {3, 16, 24, 40, false, false, false, 0.5f, 1.f},
      {3, 16, 24, 40, false, true, true, 1.f, 0.f},
      {3, 16, 24, 40, true, false, true, 1.f, 1.f},
      {4, 13, 9, 11, true, true, false, 1.f, 0.f},
      // GPT-2's weight gradient of the MLP's fc: dW [3072, 768] += dY^T [3072, 512] X [512, 768].
      {1, 3072, 768, 512, true, false, false, 1.f, 1.f},
  };
  uint32_t seed = 300;
  for (const Case& c : cases) {
    const std::string name = "matmul " + std::string(zt::dtype_name(dt())) + "->f32 b" +
                             std::to_string(c.batch) + " " + std::to_string(c.m) + "x" +
                             std::to_string(c.n) + "x" + std::to_string(c.k) + (c.ta ? " ta" : "") +
                             (c.tb ? " tb" : "") + (c.b_shared ? " shared-b" : "") + " beta " +
                             std::to_string(c.beta);
    zt::Shape sa = c.ta ? zt::Shape{c.k, c.m} : zt::Shape{c.m, c.k};
    zt::Shape sb = c.tb ? zt::Shape{c.n, c.k} : zt::Shape{c.k, c.n};
    zt::Shape so{c.m, c.n};
    if (c.batch > 1) {
      sa.insert(sa.begin(), c.batch);
      if (!c.b_shared) sb.insert(sb.begin(), c.batch);
      so.insert(so.begin(), c.batch);
    }
    Tensor a = rounded(rand_host(sa, seed++), dt()), b = rounded(rand_host(sb, seed++), dt());
    Tensor out = rand_host(so, seed++);  // f32: the accumulator of beta = 1
    Tensor ga = to_gpu(a, dt()), gb = to_gpu(b, dt()), gout = to_gpu(out, DType::f32);
    ops::matmul(a, b, out, c.ta, c.tb, c.alpha, c.beta);
    ops::matmul(ga, gb, gout, c.ta, c.tb, c.alpha, c.beta);
    EXPECT_EQ(gout.dtype(), DType::f32);
    expect_close(gout, out, 1e-4f, name);
  }
}

// Gradient accumulation over micro-batches: dW += dY_i^T X_i into one f32 buffer, four times,
// with the buffer a view at an odd element offset of a flat gradient buffer (4-byte alignment), and
// 16-bit operands at an odd offset too (2-byte alignment), as views into flat buffers can be.
TEST_P(CudaBlas16, WeightGradientAccumulatesIntoF32Views) {
  const int64_t rows = 96, nout = 40, nin = 24;
  Tensor flat = Tensor::zeros({1 + nout * nin});
  Tensor gflat = to_gpu(flat, DType::f32);
  Tensor dw = flat.flat_view(1, {nout, nin}), gdw = gflat.flat_view(1, {nout, nin});
  for (uint32_t i = 0; i < 4; ++i) {
    Tensor dy = rounded(rand_host({1 + rows * nout}, 400 + i), dt());
    Tensor x = rounded(rand_host({rows, nin}, 500 + i), dt());
    Tensor gdy_flat = to_gpu(dy, dt()), gx = to_gpu(x, dt());
    Tensor dy2 = dy.flat_view(1, {rows, nout}), gdy2 = gdy_flat.flat_view(1, {rows, nout});
    ops::matmul(dy2, x, dw, true, false, 1.f, 1.f);
    ops::matmul(gdy2, gx, gdw, true, false, 1.f, 1.f);
  }
  expect_close(gdw, dw, 1e-4f, "dW accumulated over 4 micro-batches");
  // The element before the view is untouched.
  EXPECT_EQ(to_host(gflat.flat_view(0, {1})).to_vector()[0], 0.f);
}

TEST_P(CudaBlas, MixedDtypeRulesOnCuda) {
  Tensor a = Tensor::zeros({4, 8}, DType::bf16, Device::cuda());
  Tensor b = Tensor::zeros({8, 8}, DType::f16, Device::cuda());
  Tensor o = Tensor::zeros({4, 8}, DType::f32, Device::cuda());
  EXPECT_THROW(ops::matmul(a, b, o), zt::Error);  // a, b differ
  Tensor b16 = Tensor::zeros({8, 8}, DType::bf16, Device::cuda());
  Tensor of16 = Tensor::zeros({4, 8}, DType::f16, Device::cuda());
  EXPECT_THROW(ops::matmul(a, b16, of16), zt::Error);  // bf16 in, f16 out
}

// ---- linear: forward with bias and GELU -------------------------------------------------------
struct Lin {
  int64_t rows, k, n;
};
// n % 8 == 0 can fuse GELU; 20 cannot (aux leading dimension), 1 neither: the composition runs.
const Lin kLins[] = {{64, 96, 128}, {33, 40, 20}, {1, 8, 1}, {512, 768, 3072}};

// One forward on the GPU with `od` as out/bias/pre dtype against the CPU on rounded inputs.
void check_linear_forward(DType dt, DType od, const Lin& c, bool gelu, bool with_bias,
                          uint32_t seed, const std::string& tag) {
  const std::string name = tag + " linear " + zt::dtype_name(dt) + "->" + zt::dtype_name(od) +
                           " rows " + std::to_string(c.rows) + " K " + std::to_string(c.k) + " N " +
                           std::to_string(c.n) + (gelu ? " gelu" : "") + (with_bias ? " bias" : "");
  Tensor x = rounded(rand_host({c.rows, c.k}, seed, -2.f, 2.f), dt);
  Tensor w = rounded(rand_host({c.n, c.k}, seed + 1, -0.2f, 0.2f), dt);
  Tensor bias = rounded(rand_host({c.n}, seed + 2), od);
  Tensor out = Tensor::empty({c.rows, c.n}), pre = Tensor::empty({c.rows, c.n});
  ops::linear_forward(x, w, with_bias ? bias : Tensor(), out, gelu ? &pre : nullptr);
  Tensor gx = to_gpu(x, dt), gw = to_gpu(w, dt), gbias = to_gpu(bias, od);
  Tensor gout = Tensor::empty({c.rows, c.n}, od, Device::cuda());
  Tensor gpre = Tensor::empty({c.rows, c.n}, od, Device::cuda());
  ops::linear_forward(gx, gw, with_bias ? gbias : Tensor(), gout, gelu ? &gpre : nullptr);
  const float tol = od == DType::f32 ? (gelu ? 1e-3f : 1e-4f) : ulp_tol(od, gelu ? 4.f : 2.f);
  expect_close(gout, out, tol, name + " out");
  if (gelu) expect_close(gpre, pre, od == DType::f32 ? 1e-4f : ulp_tol(od, 2.f), name + " pre");
}

TEST_P(CudaBlas, LinearForwardMatchesCpu) {
  uint32_t seed = 600;
  const zt::cuda::BlasStats before = zt::cuda::blas_stats();
  for (const Lin& c : kLins)
    for (bool gelu : {false, true})
      for (bool with_bias : {true, false}) {
        check_linear_forward(dt(), dt(), c, gelu, with_bias, seed, "fused");
        if (dt() != DType::f32)
          check_linear_forward(dt(), DType::f32, c, gelu, with_bias, seed, "fused");
        seed += 3;
      }
  const zt::cuda::BlasStats after = zt::cuda::blas_stats();
  std::printf("[ info ] %s: fused epilogue products %lld, refused by cuBLASLt %lld\n",
              zt::dtype_name(dt()), static_cast<long long>(after.fused_calls - before.fused_calls),
              static_cast<long long>(after.fused_unsupported - before.fused_unsupported));
  // bf16 with bias and GELU is TransformerEngine's everyday case: cuBLASLt must fuse it on Hopper.
  if (dt() == DType::bf16) {
    EXPECT_GT(after.fused_calls, before.fused_calls);
  }
}

TEST_P(CudaBlas, LinearForwardFusedEqualsUnfused) {
  const Lin c{128, 64, 256};
  Tensor x = to_gpu(rand_host({c.rows, c.k}, 700, -2.f, 2.f), dt());
  Tensor w = to_gpu(rand_host({c.n, c.k}, 701, -0.2f, 0.2f), dt());
  Tensor bias = to_gpu(rand_host({c.n}, 702), dt());
  Tensor out_f = Tensor::empty({c.rows, c.n}, dt(), Device::cuda()), pre_f = out_f.clone();
  Tensor out_u = out_f.clone(), pre_u = out_f.clone();
  ops::linear_forward(x, w, bias, out_f, &pre_f);
  zt::cuda::set_fused_epilogues(false);
  const zt::cuda::BlasStats before = zt::cuda::blas_stats();
  ops::linear_forward(x, w, bias, out_u, &pre_u);
  EXPECT_EQ(zt::cuda::blas_stats().fused_calls, before.fused_calls) << "switched off, yet fused";
  zt::cuda::set_fused_epilogues(true);
  expect_close(pre_f, to_host(pre_u), ulp_tol(dt(), 2.f), "pre fused vs unfused");
  // f32: the epilogue's tanh may be a fast approximation (see the tolerances above).
  expect_close(out_f, to_host(out_u), dt() == DType::f32 ? 1e-3f : ulp_tol(dt(), 4.f),
               "out fused vs unfused");
}

// cuBLASLt's GELU must be the tanh form of core/ops.h. With an identity weight the product is exact
// (x times 1 plus zeros), so out = GELU(x) as the epilogue computes it in f32. The erf form
// (PyTorch's default GELU) differs from the tanh form by up to ~5e-4, about what a fast tanh may
// err by, so the check projects the error on that difference: the tanh form gives ~0 (its error is
// not correlated with the gap), the erf form 1.
TEST_P(CudaBlas16, GeluEpilogueIsTheTanhForm) {
  const int64_t rows = 256, k = 64;
  Tensor x = rounded(rand_host({rows, k}, 800, -5.f, 5.f), dt());
  std::vector<float> eye(static_cast<size_t>(k * k), 0.f);
  for (int64_t i = 0; i < k; ++i) eye[static_cast<size_t>(i * k + i)] = 1.f;
  Tensor w = Tensor::from_vector(eye, {k, k});
  Tensor want = Tensor::empty({rows, k});
  ops::gelu_forward(x, want);
  Tensor gout = Tensor::empty({rows, k}, DType::f32, Device::cuda()), gpre = gout.clone();
  Tensor gbias = Tensor::zeros({k}, DType::f32, Device::cuda());
  const zt::cuda::BlasStats before = zt::cuda::blas_stats();
  ops::linear_forward(to_gpu(x, dt()), to_gpu(w, dt()), gbias, gout, &gpre);
  const bool fused = zt::cuda::blas_stats().fused_calls > before.fused_calls;
  expect_close(gpre, x, 0.f, "pre = x exactly", true);
  expect_close(gout, want, 2e-3f,
               std::string(fused ? "cuBLASLt" : "unfused") + " GELU vs tanh form", true);
  const std::vector<float> xs = x.to_vector(), got = to_host(gout).to_vector();
  double erf_gap = 0.0, num = 0.0, den = 0.0, worst = 0.0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    const double t = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    const double gap = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))) - t;
    erf_gap = std::max(erf_gap, std::fabs(gap));
    worst = std::max(worst, std::fabs(got[i] - t));
    num += (got[i] - t) * gap;
    den += gap * gap;
  }
  const double proj = num / den;
  std::printf(
      "[ info ] GELU %s: max error vs tanh form %.2e; tanh vs erf form gap up to %.2e; "
      "projection on the gap %.3f (tanh 0, erf 1)\n",
      fused ? "from the cuBLASLt epilogue" : "from our kernel (epilogue refused)", worst, erf_gap,
      proj);
  EXPECT_LT(std::fabs(proj), 0.25) << "the GELU is not the tanh form";
  EXPECT_TRUE(fused) << "cuBLASLt refused GELU_AUX_BIAS for " << zt::dtype_name(dt())
                     << " -> f32; the formula was not checked";
}

// ---- linear: backward ------------------------------------------------------------------------
// dx = dout w, dw += dout^T x, dbias += column sums, with dw/dbias in `gd` (f32: the
// mixed-precision gradient buffers, or the 16-bit dtype itself).
void check_linear_backward(DType dt, DType gd, DType bd, const Lin& c, uint32_t seed,
                           const std::string& tag) {
  const std::string name = tag + " linear_backward " + zt::dtype_name(dt) + " dw " +
                           zt::dtype_name(gd) + " dbias " + zt::dtype_name(bd) + " rows " +
                           std::to_string(c.rows) + " K " + std::to_string(c.k) + " N " +
                           std::to_string(c.n);
  Tensor x = rounded(rand_host({c.rows, c.k}, seed), dt),
         w = rounded(rand_host({c.n, c.k}, seed + 1), dt);
  Tensor dout = rounded(rand_host({c.rows, c.n}, seed + 2), dt);
  Tensor dw = rounded(rand_host({c.n, c.k}, seed + 3), gd),
         db = rounded(rand_host({c.n}, seed + 4), bd);
  Tensor dx = Tensor::empty({c.rows, c.k});
  Tensor gx = to_gpu(x, dt), gw = to_gpu(w, dt), gdout = to_gpu(dout, dt);
  Tensor gdw = to_gpu(dw, gd), gdb = to_gpu(db, bd),
         gdx = Tensor::empty({c.rows, c.k}, dt, Device::cuda());
  ops::linear_backward(dout, x, w, &dx, dw, &db);
  ops::linear_backward(gdout, gx, gw, &gdx, gdw, &gdb);
  expect_close(gdx, dx, dt == DType::f32 ? 1e-4f : ulp_tol(dt, 2.f), name + " dx");
  expect_close(gdw, dw, gd == DType::f32 ? 1e-4f : ulp_tol(gd, 4.f), name + " dw");
  expect_close(gdb, db, bd == DType::f32 ? 1e-4f : ulp_tol(bd, 4.f), name + " dbias");
}

TEST_P(CudaBlas, LinearBackwardMatchesCpu) {
  uint32_t seed = 900;
  const zt::cuda::BlasStats before = zt::cuda::blas_stats();
  for (const Lin& c : kLins) {
    check_linear_backward(dt(), dt(), dt(), c, seed, "fused");  // BGRADB in the dtype itself
    if (dt() != DType::f32) {
      check_linear_backward(dt(), DType::f32, DType::f32, c, seed, "fused");  // f32 grads
      check_linear_backward(dt(), DType::f32, dt(), c, seed, "mixed");  // dbias like dout: unfused
      zt::cuda::set_fused_epilogues(false);  // f32 dbias from 16-bit dout: ones^T dout
      check_linear_backward(dt(), DType::f32, DType::f32, c, seed, "unfused");
      zt::cuda::set_fused_epilogues(true);
    }
    seed += 5;
  }
  const zt::cuda::BlasStats after = zt::cuda::blas_stats();
  std::printf("[ info ] %s backward: fused %lld, refused %lld\n", zt::dtype_name(dt()),
              static_cast<long long>(after.fused_calls - before.fused_calls),
              static_cast<long long>(after.fused_unsupported - before.fused_unsupported));
  if (dt() == DType::bf16) {
    EXPECT_GT(after.fused_calls, before.fused_calls);
  }
}

TEST_P(CudaBlas, LinearBackwardDgeluMatchesCpu) {
  // This layer maps K -> N; its input was gelu(pre), pre [rows, K]. K % 8 == 0 can fuse DGELU.
  uint32_t seed = 1000;
  for (const Lin& c : kLins) {
    const std::vector<DType> pds =
        dt() == DType::f32 ? std::vector<DType>{DType::f32} : std::vector<DType>{dt(), DType::f32};
    for (DType pd : pds) {
      const std::string name = std::string("dgelu ") + zt::dtype_name(dt()) + "->" +
                               zt::dtype_name(pd) + " rows " + std::to_string(c.rows) + " K " +
                               std::to_string(c.k) + " N " + std::to_string(c.n);
      Tensor pre = rounded(rand_host({c.rows, c.k}, seed, -3.f, 3.f), pd);
      Tensor w = rounded(rand_host({c.n, c.k}, seed + 1), dt());
      Tensor dout = rounded(rand_host({c.rows, c.n}, seed + 2), dt());
      Tensor dpre = Tensor::empty({c.rows, c.k});
      ops::linear_backward_dgelu(dout, w, pre, dpre);
      Tensor gdpre = Tensor::empty({c.rows, c.k}, pd, Device::cuda());
      ops::linear_backward_dgelu(to_gpu(dout, dt()), to_gpu(w, dt()), to_gpu(pre, pd), gdpre);
      expect_close(gdpre, dpre, pd == DType::f32 ? 1e-3f : ulp_tol(pd, 4.f), name);
      seed += 3;
    }
  }
}

// A NaN or infinity that enters a product must leave it non-finite: fp16 training detects overflow
// by looking for them in the gradients (precision/, DeepSpeed's has_overflow). cuBLASLt's ReLU
// epilogue is reported to turn NaN into 0 (NVIDIA forums, "Incorrect result of cublasLtMatmul with
// CUBLASLT_EPILOGUE_RELU when input is NaN"); this checks that GELU, DGELU and BGRADB do not.
TEST_P(CudaBlas, NonFiniteValuesSurviveTheEpilogues) {
  const int64_t rows = 64, k = 32, n = 48;
  Tensor xh = rand_host({rows, k}, 1200), douth = rand_host({rows, n}, 1201);
  xh.data<float>()[5 * k + 3] = std::numeric_limits<float>::quiet_NaN();
  douth.data<float>()[7 * n + 2] = std::numeric_limits<float>::infinity();
  Tensor x = to_gpu(xh, dt()), dout = to_gpu(douth, dt());
  Tensor w = to_gpu(rand_host({n, k}, 1202), dt()), bias = to_gpu(rand_host({n}, 1203), dt());
  Tensor out = Tensor::empty({rows, n}, dt(), Device::cuda()), pre = out.clone();
  ops::linear_forward(x, w, bias, out, &pre);
  EXPECT_FALSE(ops::all_finite(pre)) << "NaN lost in the pre-activation";
  EXPECT_FALSE(ops::all_finite(out)) << "NaN lost by the GELU epilogue";
  Tensor wp = to_gpu(rand_host({n, k}, 1204), dt());  // this layer maps k -> n; pre is [rows, k]
  Tensor pre_k = to_gpu(rand_host({rows, k}, 1205), dt());
  Tensor dpre = Tensor::empty({rows, k}, dt(), Device::cuda());
  ops::linear_backward_dgelu(dout, wp, pre_k, dpre);
  EXPECT_FALSE(ops::all_finite(dpre)) << "infinity lost by the DGELU epilogue";
  Tensor dw = Tensor::zeros({n, k}, dt(), Device::cuda()),
         db = Tensor::zeros({n}, dt(), Device::cuda());
  ops::linear_backward(dout, x, w, nullptr, dw, &db);
  EXPECT_FALSE(ops::all_finite(db)) << "infinity lost by the BGRADB epilogue";
  EXPECT_FALSE(ops::all_finite(dw));
}

// ---- the plan cache ---------------------------------------------------------------------------
TEST_P(CudaBlas, PlansAreCachedPerShapeAndAlignment) {
  // A shape no other test uses, so the first call builds its plan.
  const int64_t m = 37, n = 29, k = 53;
  Tensor a = to_gpu(rand_host({m, k}, 1100), dt()), b = to_gpu(rand_host({k, n}, 1101), dt());
  Tensor out = Tensor::empty({m, n}, dt(), Device::cuda());
  zt::cuda::BlasStats s0 = zt::cuda::blas_stats();
  ops::matmul(a, b, out);
  zt::cuda::BlasStats s1 = zt::cuda::blas_stats();
  EXPECT_EQ(s1.heuristic_queries - s0.heuristic_queries, 1);
  for (int i = 0; i < 5; ++i) ops::matmul(a, b, out);
  zt::cuda::BlasStats s2 = zt::cuda::blas_stats();
  EXPECT_EQ(s2.heuristic_queries, s1.heuristic_queries) << "steady state asked the heuristic";
  EXPECT_EQ(s2.plan_hits - s1.plan_hits, 5);
  // Another alignment of the same shape is another plan (once).
  Tensor flat = Tensor::empty({1 + m * n}, dt(), Device::cuda());
  Tensor off = flat.flat_view(1, {m, n});
  ops::matmul(a, b, off);
  ops::matmul(a, b, off);
  zt::cuda::BlasStats s3 = zt::cuda::blas_stats();
  EXPECT_EQ(s3.heuristic_queries - s2.heuristic_queries, 1);
  // A fused linear: one plan, then hits.
  const int64_t rows = 48, kin = 24, nout = 16;
  Tensor x = to_gpu(rand_host({rows, kin}, 1102), dt()),
         w = to_gpu(rand_host({nout, kin}, 1103), dt());
  Tensor bias = to_gpu(rand_host({nout}, 1104), dt());
  Tensor y = Tensor::empty({rows, nout}, dt(), Device::cuda()), pre = y.clone();
  ops::linear_forward(x, w, bias, y, &pre);
  zt::cuda::BlasStats s4 = zt::cuda::blas_stats();
  const bool fused = s4.fused_calls > s3.fused_calls;
  // Fused: the epilogue's plan. Refused: that (cached as refused) and the plain product's.
  EXPECT_EQ(s4.heuristic_queries - s3.heuristic_queries, fused ? 1 : 2);
  for (int i = 0; i < 3; ++i) ops::linear_forward(x, w, bias, y, &pre);
  zt::cuda::BlasStats s5 = zt::cuda::blas_stats();
  EXPECT_EQ(s5.heuristic_queries, s4.heuristic_queries) << "steady state asked the heuristic";
  EXPECT_EQ(s5.plan_hits - s4.plan_hits, fused ? 3 : 6);
  EXPECT_EQ(s5.fused_calls - s4.fused_calls, fused ? 3 : 0);
}

std::string dtype_label(const ::testing::TestParamInfo<DType>& i) {
  return std::string(zt::dtype_name(i.param));
}
INSTANTIATE_TEST_SUITE_P(Dtypes, CudaBlas, ::testing::Values(DType::f32, DType::bf16, DType::f16),
                         dtype_label);
INSTANTIATE_TEST_SUITE_P(Dtypes, CudaBlas16, ::testing::Values(DType::bf16, DType::f16),
                         dtype_label);

}  // namespace
