// tests/precision/test_overflow.cpp: precision/overflow.h: inf/NaN detection at the first, a
// middle and the last position of f32, f16 and bf16 buffers of several lengths (threaded and
// not); sums of squares against a plain double loop, bit-identical across thread counts and between
// a 16-bit buffer and its f32 conversion; the clipping factor as torch and DeepSpeed compute it.
#include "precision/convert.h"
#include "precision/overflow.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace zt::precision {
namespace {

const int64_t kLengths[] = {1, 2, 17, 4097, 1000003, 3000000};

std::vector<float> finite_floats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-4.f, 4.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = u(rng);
  return v;
}

std::vector<int64_t> positions(int64_t n) { return {0, n / 2, n - 1}; }

TEST(PrecisionOverflow, F32FindsInfAndNanAnywhere) {
  const float specials[] = {std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            f32_from_bits(0x7f800001u),  // signalling NaN
                            f32_from_bits(0xffffffffu)};
  for (int64_t n : kLengths) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto v = finite_floats(n, 1);
    v[0] = FLT_MAX;                                // large but finite
    v[n - 1] = -FLT_MIN;                           // and tiny: neither is an overflow
    if (n > 2) v[1] = f32_from_bits(0x00000001u);  // f32 subnormal
    EXPECT_FALSE(has_inf_or_nan(v.data(), n));
    for (float s : specials) {
      for (int64_t pos : positions(n)) {
        const float keep = v[pos];
        v[pos] = s;
        EXPECT_TRUE(has_inf_or_nan(v.data(), n)) << "value " << s << " at " << pos;
        v[pos] = keep;
      }
    }
    EXPECT_FALSE(has_inf_or_nan(v.data(), n));
  }
  EXPECT_FALSE(has_inf_or_nan(static_cast<const float*>(nullptr), 0));
}

class Overflow16Bit : public ::testing::TestWithParam<DType> {};

TEST_P(Overflow16Bit, FindsInfAndNanAnywhere) {
  const DType dt = GetParam();
  const bool f16 = dt == DType::f16;
  // inf, -inf, quiet NaN, signalling NaN, -NaN with all payload bits.
  const std::vector<uint16_t> specials =
      f16 ? std::vector<uint16_t>{0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xffff}
          : std::vector<uint16_t>{0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffff};
  const uint16_t max_finite = f16 ? 0x7bff : 0x7f7f;
  for (int64_t n : kLengths) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const auto f = finite_floats(n, 2);
    std::vector<uint16_t> v(static_cast<size_t>(n));
    copy_master_to_model(f.data(), v.data(), dt, n);
    v[0] = max_finite;
    v[n - 1] = static_cast<uint16_t>(0x8000 | max_finite);
    EXPECT_FALSE(has_inf_or_nan(v.data(), n, dt));
    for (uint16_t s : specials) {
      for (int64_t pos : positions(n)) {
        const uint16_t keep = v[pos];
        v[pos] = s;
        EXPECT_TRUE(has_inf_or_nan(v.data(), n, dt)) << std::hex << s << " at " << std::dec << pos;
        v[pos] = keep;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Precision, Overflow16Bit, ::testing::Values(DType::f16, DType::bf16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(PrecisionOverflow, ExhaustiveSixteenBitPatterns) {
  // Each 16-bit pattern alone in a buffer of zeros: flagged exactly when it is inf or NaN.
  for (DType dt : {DType::f16, DType::bf16}) {
    std::vector<uint16_t> v(33, 0);
    for (uint32_t h = 0; h < 65536; ++h) {
      v[h % 33] = static_cast<uint16_t>(h);
      const float x = dt == DType::f16 ? f16_to_f32(static_cast<uint16_t>(h))
                                       : bf16_to_f32(static_cast<uint16_t>(h));
      ASSERT_EQ(has_inf_or_nan(v.data(), 33, dt), !std::isfinite(x)) << dtype_name(dt) << " " << h;
      v[h % 33] = 0;
    }
  }
}

TEST(PrecisionOverflow, LargeFiniteGradientsAreNotAnOverflow) {
  // DeepSpeed's sum-based test (float(x.float().sum()) is inf) would flag this buffer: its f32
  // sum overflows although every element is finite. The element-wise test does not.
  std::vector<float> v(1000, 1e38f);
  EXPECT_FALSE(has_inf_or_nan(v.data(), 1000));
  EXPECT_DOUBLE_EQ(sum_squares(v.data(), 1000), 1000 * (double(1e38f) * double(1e38f)));
}

TEST(PrecisionOverflow, TensorForms) {
  Tensor t = Tensor::from_vector({1.f, 2.f, 3.f}, {3});
  EXPECT_FALSE(has_inf_or_nan(t));
  EXPECT_EQ(sum_squares(t), 14.0);
  Tensor h = t.to(DType::f16);
  EXPECT_FALSE(has_inf_or_nan(h));
  EXPECT_EQ(sum_squares(h), 14.0);
  h.data_u16()[2] = 0x7c00;
  EXPECT_TRUE(has_inf_or_nan(h));
  EXPECT_THROW(has_inf_or_nan(Tensor::zeros({3}, DType::i32)), Error);
  EXPECT_THROW(has_inf_or_nan(Tensor()), Error);
}

// ---- sums of squares ----------------------------------------------------------------------------
TEST(PrecisionSumSquares, SmallExactValues) {
  const float a[] = {3.f, 4.f};
  EXPECT_EQ(sum_squares(a, 2), 25.0);
  EXPECT_EQ(sum_squares(a, 0), 0.0);
  const float inf[] = {1.f, std::numeric_limits<float>::infinity()};
  EXPECT_TRUE(std::isinf(sum_squares(inf, 2)));
  const float nan[] = {1.f, std::numeric_limits<float>::quiet_NaN(), 2.f};
  EXPECT_TRUE(std::isnan(sum_squares(nan, 3)));
}

TEST(PrecisionSumSquares, MatchesDoubleLoopAndIsThreadIndependent) {
  for (int64_t n : kLengths) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const auto v = finite_floats(n, 3);
    double ref = 0.0;
    for (float x : v) ref += double(x) * double(x);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const double one = sum_squares(v.data(), n);
    omp_set_num_threads(5);
    const double five = sum_squares(v.data(), n);
    omp_set_num_threads(saved);
    EXPECT_EQ(one, five);  // bit for bit
    EXPECT_NEAR(one, ref, 1e-12 * ref);
  }
}

TEST(PrecisionSumSquares, SixteenBitEqualsItsF32Conversion) {
  for (DType dt : {DType::f16, DType::bf16}) {
    for (int64_t n : kLengths) {
      const auto f = finite_floats(n, 4);
      std::vector<uint16_t> h(static_cast<size_t>(n));
      copy_master_to_model(f.data(), h.data(), dt, n);
      std::vector<float> w(static_cast<size_t>(n));
      widen_to_f32(h.data(), dt, w.data(), n);
      EXPECT_EQ(sum_squares(h.data(), n, dt), sum_squares(w.data(), n)) << dtype_name(dt) << n;
    }
  }
  const uint16_t x[] = {0x3c00};  // 1.0 in f16
  EXPECT_THROW(sum_squares(x, 1, DType::f32), Error);
}

// ---- clipping -----------------------------------------------------------------------------------
TEST(PrecisionClip, TorchCoefficient) {
  EXPECT_DOUBLE_EQ(clip_coefficient(10.0, 1.0), 1.0 / (10.0 + 1e-6));
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_coefficient(0.0, 1.0), 1.0);
  // At norm == max_norm, torch still multiplies by 1 / (1 + 1e-6) (< 1).
  EXPECT_DOUBLE_EQ(clip_coefficient(1.0, 1.0), 1.0 / (1.0 + 1e-6));
  EXPECT_TRUE(std::isnan(clip_coefficient(std::nan(""), 1.0)));
  EXPECT_EQ(clip_coefficient(std::numeric_limits<double>::infinity(), 1.0), 0.0);
  EXPECT_THROW(clip_coefficient(1.0, 0.0), Error);
}

TEST(PrecisionClip, DeepSpeedUnscaleAndClip) {
  // Scaled norm 10240 at loss scale 1024: true norm 10, clipped to 1.
  auto u = unscale_and_clip(10240.0, 1024.0, 1.0);
  EXPECT_EQ(u.grad_norm, 10.0);
  EXPECT_DOUBLE_EQ(u.multiplier, 1.0 / (((10240.0 / 1024.0) + 1e-6) / 1.0 * 1024.0));
  // Equals unscaling then torch's coefficient.
  EXPECT_NEAR(u.multiplier, clip_coefficient(10.0, 1.0) / 1024.0, 1e-18);
  // Under the limit: unscale only.
  u = unscale_and_clip(512.0, 1024.0, 1.0);
  EXPECT_EQ(u.multiplier, 1.0 / 1024.0);
  // No clipping configured.
  u = unscale_and_clip(1e9, 8.0, 0.0);
  EXPECT_EQ(u.multiplier, 0.125);
  EXPECT_EQ(u.grad_norm, 1.25e8);
  EXPECT_THROW(unscale_and_clip(1.0, 0.0, 1.0), Error);
}

// GradChecker on the CPU: has_inf_or_nan and sum_squares over several tensors, reset by read().
// (Its GPU path is tests/gpu/test_cuda_optim.cpp.)
TEST(GradChecker, CpuAddsTensorsAndResetsOnRead) {
  const std::vector<float> a = finite_floats(1000, 1), b = finite_floats(4097, 2);
  Tensor ta = Tensor::from_vector(a, {1000}), tb = Tensor::from_vector(b, {4097}).to(DType::bf16);
  GradChecker c;
  EXPECT_EQ(c.device(), Device::cpu());
  c.add(ta);
  c.add(std::vector<Tensor>{tb});
  GradCheck r = c.read();
  EXPECT_FALSE(r.overflow);
  EXPECT_EQ(r.sum_squares, sum_squares(ta) + sum_squares(tb));  // the same order of additions
  r = c.read();
  EXPECT_FALSE(r.overflow);
  EXPECT_EQ(r.sum_squares, 0.0);

  std::vector<float> bad = a;
  bad[500] = std::numeric_limits<float>::quiet_NaN();
  c.add(ta);
  c.add(Tensor::from_vector(bad, {1000}));
  c.add(tb);
  r = c.read();
  EXPECT_TRUE(r.overflow);
  EXPECT_TRUE(std::isnan(r.sum_squares));  // not computed once an overflow is seen
  EXPECT_FALSE(c.read().overflow);

  const GradCheck one = check_gradients(tb);
  EXPECT_FALSE(one.overflow);
  EXPECT_EQ(one.sum_squares, sum_squares(tb));
  EXPECT_THROW(c.add(Tensor::zeros({3}, DType::i32)), Error);
}

}  // namespace
}  // namespace zt::precision
