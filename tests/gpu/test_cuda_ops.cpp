// tests/gpu/test_cuda_ops.cpp: every op of the CUDA backend against the CPU backend (the oracle,
// CONVENTIONS.md 11), on random data, for each dtype the GPU supports (f32, bf16, f16).
//
// Written once and instantiated per dtype: the inputs are drawn in f32 on the host, rounded to the
// dtype under test (so both backends see the same values), run through the CPU op in f32 and
// through the GPU op in the dtype, and compared elementwise with |got - want| <= tol * (1 + |want|)
// or tol * max|want| for outputs that cancel (matmul, sums). Tolerances: f32 tight (1e-5; the GPU
// sums in another order), bf16 and f16 to a few units of their last place (2^-8 and 2^-11
// relative per rounding), looser where an op rounds more than once.
// Without a GPU every test here skips itself with the reason.
#include "core/cuda/device.h"
#include "core/cuda/stream.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/gpu/gpu_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

// ---- helpers ----------------------------------------------------------------------------------
Tensor ids_host(int64_t n, int32_t limit, uint32_t seed, bool some_ignored = false) {
  std::mt19937 rng(seed);
  Tensor t = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i)
    t.data<int32_t>()[i] = some_ignored && i % 7 == 3 ? -1 : static_cast<int32_t>(rng() % limit);
  return t;
}

float unit_tol(DType dt) {
  switch (dt) {
    case DType::bf16: return 1.f / 128;   // 2 ulp at 2^-8 relative rounding
    case DType::f16: return 1.f / 1024;   // 2 ulp at 2^-11
    default: return 1e-5f;
  }
}

// Compares a GPU result with the CPU's: |got - want| <= tol * (1 + |want|) elementwise, or with
// `scale_by_max`, <= tol * max|want| (for outputs where cancellation makes small values noisy).
void expect_close(const Tensor& gpu, const Tensor& cpu, float tol, const std::string& what,
                  bool scale_by_max = false) {
  const std::vector<float> g = to_host(gpu).to_vector(), c = cpu.to_vector();
  ASSERT_EQ(g.size(), c.size()) << what;
  float maxabs = 0.f;
  for (float v : c) maxabs = std::max(maxabs, std::fabs(v));
  int bad = 0;
  float worst = 0.f;
  for (size_t i = 0; i < g.size(); ++i) {
    const float lim = scale_by_max ? tol * std::max(maxabs, 1e-6f) : tol * (1.f + std::fabs(c[i]));
    const float err = std::fabs(g[i] - c[i]);
    worst = std::max(worst, err);
    if (!(err <= lim) && ++bad <= 5)
      ADD_FAILURE() << what << "[" << i << "]: gpu " << g[i] << ", cpu " << c[i] << " (tol " << lim
                    << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": worst error " << worst << " over " << g.size() << " values";
}

class CudaOps : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    if (zt::cuda::device_count() == 0) GTEST_SKIP() << "no GPU: " << zt::cuda::device_summary();
  }
  DType dt() const { return GetParam(); }
  float tol(float ulps = 1.f) const { return unit_tol(dt()) * ulps; }
};

// ---- elementwise ------------------------------------------------------------------------------
TEST_P(CudaOps, CopyRoundTripAndFill) {
  Tensor h = rand_host({1000, 3}, 1, -100.f, 100.f);
  Tensor d = to_gpu(h, dt());
  EXPECT_EQ(d.device(), Device::cuda());
  // Host -> device rounds once (on the host); device -> host is exact.
  expect_close(d, rounded(h, dt()), 0.f, "round trip");
  // Device-side casts agree with the CPU's rounding (core/dtype.h) bit for bit.
  Tensor f = to_gpu(h, DType::f32);
  Tensor c = Tensor::empty(h.shape(), dt(), Device::cuda());
  ops::copy(f, c);
  expect_close(c, rounded(h, dt()), 0.f, "device cast");
  Tensor zi = Tensor::zeros({9}, DType::i32, Device::cuda());  // zero fill works for any dtype
  EXPECT_EQ(to_host(zi).data<int32_t>()[8], 0);
  Tensor z = Tensor::zeros({77}, dt(), Device::cuda());
  expect_close(z, Tensor::zeros({77}), 0.f, "zeros");
  ops::fill(z, 0.1f);
  Tensor want = Tensor::empty({77});
  ops::fill(want, 0.1f);
  expect_close(z, rounded(want, dt()), 0.f, "fill");
  Tensor v = d.flat_view(5, {10});  // a view at an element offset
  expect_close(v, rounded(h, dt()).flat_view(5, {10}), 0.f, "view");
}

TEST_P(CudaOps, AddAxpyScale) {
  Tensor a = rounded(rand_host({4097}, 2), dt()), b = rounded(rand_host({4097}, 3), dt());
  Tensor ga = to_gpu(a, dt()), gb = to_gpu(b, dt()), gout = Tensor::empty({4097}, dt(), Device::cuda());
  Tensor out = Tensor::empty({4097});
  ops::add(a, b, out);
  ops::add(ga, gb, gout);
  expect_close(gout, out, tol(), "add");
  ops::axpy(-0.75f, a, b);
  ops::axpy(-0.75f, ga, gb);
  expect_close(gb, b, tol(), "axpy");
  ops::add_acc(a, b);
  ops::add_acc(ga, gb);
  expect_close(gb, b, tol(2), "add_acc");
  ops::scale(b, 3.f);
  ops::scale(gb, 3.f);
  expect_close(gb, b, tol(3), "scale");
}

TEST_P(CudaOps, SumSquaresAndAllFinite) {
  Tensor h = rounded(rand_host({1 << 20}, 4, -3.f, 3.f), dt());
  Tensor d = to_gpu(h, dt());
  const double want = ops::sum_squares(h), got = ops::sum_squares(d);
  EXPECT_NEAR(got, want, 1e-9 * want);  // exact squares of f32 values summed in double
  EXPECT_EQ(ops::sum_squares(d), got) << "not reproducible";
  EXPECT_TRUE(ops::all_finite(d));
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    Tensor one = Tensor::from_vector({bad}, {1});
    Tensor dst = d.flat_view(123457, {1});
    ops::copy(one, dst);
    EXPECT_FALSE(ops::all_finite(d)) << bad;
    ops::copy(h.flat_view(123457, {1}), dst);
    EXPECT_TRUE(ops::all_finite(d));
  }
}

TEST_P(CudaOps, BiasAddAndGrad) {
  Tensor x = rounded(rand_host({300, 70}, 5), dt()), bias = rounded(rand_host({70}, 6), dt());
  Tensor gx = to_gpu(x, dt()), gbias = to_gpu(bias, dt());
  ops::bias_add(x, bias);
  ops::bias_add(gx, gbias);
  expect_close(gx, x, tol(), "bias_add");
  Tensor dy = rounded(rand_host({300, 70}, 7), dt());
  Tensor gdy = to_gpu(dy, dt());
  ops::bias_grad_acc(dy, bias);  // accumulates onto the bias values
  ops::bias_grad_acc(gdy, gbias);
  expect_close(gbias, bias, tol(2), "bias_grad_acc", true);
}

TEST_P(CudaOps, Gelu) {
  Tensor x = rounded(rand_host({5000}, 8, -6.f, 6.f), dt()), g = rounded(rand_host({5000}, 9), dt());
  Tensor out = Tensor::empty({5000}), dx = Tensor::empty({5000});
  Tensor gx = to_gpu(x, dt()), gg = to_gpu(g, dt());
  Tensor gout = Tensor::empty({5000}, dt(), Device::cuda()), gdx = Tensor::empty({5000}, dt(), Device::cuda());
  ops::gelu_forward(x, out);
  ops::gelu_forward(gx, gout);
  expect_close(gout, out, std::max(tol(), 1e-5f), "gelu_forward");
  ops::gelu_backward(x, g, dx);
  ops::gelu_backward(gx, gg, gdx);
  expect_close(gdx, dx, std::max(tol(), 1e-5f), "gelu_backward");
}

// ---- matmul -----------------------------------------------------------------------------------
struct MatmulCase {
  int64_t batch, m, n, k;
  bool ta, tb, b_shared;
  float alpha, beta;
};

TEST_P(CudaOps, Matmul) {
  const MatmulCase cases[] = {
      {1, 33, 17, 64, false, false, false, 1.f, 0.f}, {1, 33, 17, 64, true, false, false, 1.f, 0.f},
      {1, 33, 17, 64, false, true, false, 1.f, 0.f},  {1, 33, 17, 64, true, true, false, 1.f, 0.f},
      {3, 16, 24, 40, false, false, false, 0.5f, 1.f}, {3, 16, 24, 40, false, true, false, 1.f, 0.f},
      {3, 16, 24, 40, false, false, true, 1.f, 0.f},  {3, 16, 24, 40, true, false, true, 1.f, 0.5f},
      {1, 256, 384, 768, false, true, false, 1.f, 0.f},
  };
  uint32_t seed = 100;
  for (const MatmulCase& c : cases) {
    const std::string name = "matmul b" + std::to_string(c.batch) + " " + std::to_string(c.m) +
                             "x" + std::to_string(c.n) + "x" + std::to_string(c.k) +
                             (c.ta ? " ta" : "") + (c.tb ? " tb" : "") +
                             (c.b_shared ? " shared-b" : "");
    zt::Shape sa = c.ta ? zt::Shape{c.k, c.m} : zt::Shape{c.m, c.k};
    zt::Shape sb = c.tb ? zt::Shape{c.n, c.k} : zt::Shape{c.k, c.n};
    zt::Shape so{c.m, c.n};
    if (c.batch > 1) {
      sa.insert(sa.begin(), c.batch);
      if (!c.b_shared) sb.insert(sb.begin(), c.batch);
      so.insert(so.begin(), c.batch);
    }
    Tensor a = rounded(rand_host(sa, seed++), dt()), b = rounded(rand_host(sb, seed++), dt());
    Tensor out = rounded(rand_host(so, seed++), dt());
    Tensor ga = to_gpu(a, dt()), gb = to_gpu(b, dt()), gout = to_gpu(out, dt());
    ops::matmul(a, b, out, c.ta, c.tb, c.alpha, c.beta);
    ops::matmul(ga, gb, gout, c.ta, c.tb, c.alpha, c.beta);
    // Errors grow like sqrt(K) roundings of the f32 sums, then one rounding to the dtype.
    expect_close(gout, out, dt() == DType::f32 ? 1e-5f : tol(2), name, true);
  }
}

// ---- LayerNorm, softmax, embedding, cross-entropy ---------------------------------------------
TEST_P(CudaOps, LayerNorm) {
  const int64_t rows = 37, cols = 200;
  Tensor x = rounded(rand_host({rows, cols}, 20, -2.f, 3.f), dt());
  Tensor w = rounded(rand_host({cols}, 21, 0.5f, 1.5f), dt()), b = rounded(rand_host({cols}, 22), dt());
  Tensor out = Tensor::empty({rows, cols}), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
  Tensor gx = to_gpu(x, dt()), gw = to_gpu(w, dt()), gb = to_gpu(b, dt());
  Tensor gout = Tensor::empty({rows, cols}, dt(), Device::cuda());
  Tensor gmean = Tensor::empty({rows}, DType::f32, Device::cuda()), grstd = Tensor::empty({rows}, DType::f32, Device::cuda());
  ops::layernorm_forward(x, w, b, out, mean, rstd);
  ops::layernorm_forward(gx, gw, gb, gout, gmean, grstd);
  expect_close(gout, out, tol(2), "layernorm out");
  expect_close(gmean, mean, 1e-5f, "layernorm mean");
  expect_close(grstd, rstd, 1e-5f, "layernorm rstd");

  Tensor dout = rounded(rand_host({rows, cols}, 23), dt());
  Tensor dx = Tensor::empty({rows, cols});
  Tensor dw = rounded(rand_host({cols}, 24), dt()), db = rounded(rand_host({cols}, 25), dt());
  Tensor gdout = to_gpu(dout, dt()), gdx = Tensor::empty({rows, cols}, dt(), Device::cuda());
  Tensor gdw = to_gpu(dw, dt()), gdb = to_gpu(db, dt());
  // Backward from the CPU's saved statistics on both sides, so only backward is compared.
  Tensor gmean_c = to_gpu(mean, DType::f32), grstd_c = to_gpu(rstd, DType::f32);
  ops::layernorm_backward(dout, x, w, mean, rstd, dx, dw, db);
  ops::layernorm_backward(gdout, gx, gw, gmean_c, grstd_c, gdx, gdw, gdb);
  expect_close(gdx, dx, tol(4), "layernorm dx", true);
  expect_close(gdw, dw, tol(4), "layernorm dweight", true);
  expect_close(gdb, db, tol(4), "layernorm dbias", true);
}

TEST_P(CudaOps, Softmax) {
  const int64_t rows = 19, cols = 1500;  // wider than a block: the strided loops
  Tensor x = rounded(rand_host({rows, cols}, 30, -8.f, 8.f), dt());
  Tensor y = Tensor::empty({rows, cols}), gy = Tensor::empty({rows, cols}, dt(), Device::cuda());
  Tensor gx = to_gpu(x, dt());
  ops::softmax_forward(x, y);
  ops::softmax_forward(gx, gy);
  expect_close(gy, y, tol(2), "softmax_forward", true);
  Tensor yr = rounded(y, dt()), dy = rounded(rand_host({rows, cols}, 31), dt());
  Tensor dx = Tensor::empty({rows, cols}), gdx = Tensor::empty({rows, cols}, dt(), Device::cuda());
  Tensor gyr = to_gpu(yr, dt()), gdy = to_gpu(dy, dt());
  ops::softmax_backward(yr, dy, dx);
  ops::softmax_backward(gyr, gdy, gdx);
  expect_close(gdx, dx, tol(4), "softmax_backward", true);
}

TEST_P(CudaOps, Embedding) {
  const int64_t n = 96, vocab = 50, cols = 300;
  Tensor ids = ids_host(n, vocab, 40);
  Tensor table = rounded(rand_host({vocab, cols}, 41), dt());
  Tensor out = Tensor::empty({n, cols}), gout = Tensor::empty({n, cols}, dt(), Device::cuda());
  Tensor gids = Tensor::empty({n}, DType::i32, Device::cuda());
  ops::copy(ids, gids);
  Tensor gtable = to_gpu(table, dt());
  ops::embedding_forward(ids, table, out);
  ops::embedding_forward(gids, gtable, gout);
  expect_close(gout, out, 0.f, "embedding_forward");  // a gather: exact
  Tensor dout = rounded(rand_host({n, cols}, 42), dt());
  Tensor gdout = to_gpu(dout, dt());
  ops::embedding_backward_acc(ids, dout, table);
  ops::embedding_backward_acc(gids, gdout, gtable);
  // f32: the same additions in the same (row) order: exact. 16-bit: one rounding per addition.
  expect_close(gtable, table, dt() == DType::f32 ? 0.f : tol(4), "embedding_backward_acc", true);
  // An id out of range is caught before any kernel runs.
  Tensor bad = Tensor::from_vector({0.f}, {1}).to(DType::i32);
  bad.data<int32_t>()[0] = static_cast<int32_t>(vocab);
  Tensor gbad = Tensor::empty({1}, DType::i32, Device::cuda());
  ops::copy(bad, gbad);
  Tensor gone = Tensor::empty({1, cols}, dt(), Device::cuda());
  EXPECT_THROW(ops::embedding_forward(gbad, gtable, gone), zt::Error);
}

TEST_P(CudaOps, CrossEntropy) {
  const int64_t n = 37, vocab = 1000;
  Tensor logits = rounded(rand_host({n, vocab}, 50, -5.f, 5.f), dt());
  Tensor targets = ids_host(n, static_cast<int32_t>(vocab), 51, true);  // every 7th ignored
  Tensor probs = Tensor::empty({n, vocab}), gprobs = Tensor::empty({n, vocab}, dt(), Device::cuda());
  Tensor glogits = to_gpu(logits, dt());
  Tensor gtargets = Tensor::empty({n}, DType::i32, Device::cuda());
  ops::copy(targets, gtargets);
  const float loss = ops::cross_entropy_forward(logits, targets, probs);
  const float gloss = ops::cross_entropy_forward(glogits, gtargets, gprobs);
  EXPECT_NEAR(gloss, loss, 1e-5f * (1.f + std::fabs(loss)));  // from f32 inputs: f32 precision
  expect_close(gprobs, probs, tol(2), "cross_entropy probs", true);
  Tensor pr = rounded(probs, dt());
  Tensor gpr = to_gpu(pr, dt());
  Tensor dlogits = Tensor::empty({n, vocab}), gdlogits = Tensor::empty({n, vocab}, dt(), Device::cuda());
  ops::cross_entropy_backward(pr, targets, 2.f, dlogits);
  ops::cross_entropy_backward(gpr, gtargets, 2.f, gdlogits);
  expect_close(gdlogits, dlogits, tol(2), "cross_entropy_backward", true);
}

// ---- dispatch rules ---------------------------------------------------------------------------
TEST_P(CudaOps, ClearErrorsForMixedDevicesAndMissingOps) {
  Tensor h = Tensor::zeros({4, 6});
  Tensor d = Tensor::zeros({4, 6}, dt(), Device::cuda());
  try {
    ops::add(h, d, d);
    FAIL() << "expected an error for mixed devices";
  } catch (const zt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("different devices"), std::string::npos) << e.what();
  }
  // Attention runs on cuDNN's fused kernels (core/cuda/attention.cpp), which need a head dimension
  // that is a multiple of 8: head dim 1 is refused with a message naming it, not run elsewhere.
  Tensor saved = Tensor::empty({1, 2, 2}, DType::f32, Device::cuda());
  Tensor out = Tensor::empty({1, 2, 2}, dt(), Device::cuda());
  Tensor qkv = Tensor::zeros({1, 2, 6}, dt(), Device::cuda());
  try {
    ops::attention_forward(qkv, 2, out, saved);
    FAIL() << "expected attention to refuse head dim 1 on CUDA";
  } catch (const zt::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head dim 1"), std::string::npos) << e.what();
  }
}

// Ids on the GPU are not copied to the host per op: the kernels skip an out-of-range id and the
// next loss (cross_entropy_forward, which synchronises anyway) reports the first one, then forgets.
TEST_P(CudaOps, OutOfRangeIdsAreSkippedAndReportedAtTheLoss) {
  const int64_t V = 10, C = 8, n = 5;
  auto ids_on_gpu = [&](std::vector<int32_t> v) {
    Tensor h = Tensor::empty({n}, DType::i32);
    std::copy(v.begin(), v.end(), h.data<int32_t>());
    Tensor d = Tensor::empty({n}, DType::i32, Device::cuda());
    ops::copy(h, d);
    return d;
  };
  Tensor table = to_gpu(rand_host({V, C}, 70), dt());
  Tensor out = Tensor::empty({n, C}, dt(), Device::cuda());
  ops::embedding_forward(ids_on_gpu({1, 2, 3, 99, 4}), table, out);  // no throw, no sync
  Tensor got = Tensor::empty({n, C});
  ops::copy(out, got);
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(got.data<float>()[3 * C + c], 0.f) << "skipped row";
  Tensor logits = to_gpu(rand_host({n, V}, 71), dt());
  Tensor probs = Tensor::empty({n, V}, dt(), Device::cuda());
  const Tensor good = ids_on_gpu({0, 1, 2, 3, -1});
  auto loss_error = [&](const Tensor& targets) -> std::string {
    try {
      ops::cross_entropy_forward(logits, targets, probs);
    } catch (const zt::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(loss_error(good).find("embedding_forward: id 99 at position 3 is out of range [0, 10)"),
            std::string::npos);
  EXPECT_EQ(loss_error(good), "") << "reported once";
  EXPECT_NE(loss_error(ids_on_gpu({0, 1, 12, 3, 4})).find("cross_entropy_forward: id 12 at position 2"),
            std::string::npos);
  EXPECT_EQ(loss_error(good), "");
}

TEST_P(CudaOps, OpsRunOnTheCurrentStream) {
  zt::cuda::Stream s = zt::cuda::Stream::create(0);
  Tensor a = rounded(rand_host({64, 48}, 60), dt()), b = rounded(rand_host({48, 32}, 61), dt());
  Tensor out = Tensor::empty({64, 32});
  ops::matmul(a, b, out);
  Tensor gout;
  {
    zt::cuda::StreamGuard g(s);
    Tensor ga = to_gpu(a, dt()), gb = to_gpu(b, dt());
    gout = Tensor::empty({64, 32}, dt(), Device::cuda());
    ops::matmul(ga, gb, gout);
    ops::gelu_forward(gout, gout);
    s.synchronize();
  }
  Tensor want = Tensor::empty({64, 32});
  ops::gelu_forward(out, want);
  expect_close(gout, want, dt() == DType::f32 ? 1e-5f : tol(3), "matmul + gelu on a stream", true);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::Values(DType::f32, DType::bf16, DType::f16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(zt::dtype_name(i.param));
                         });

}  // namespace
