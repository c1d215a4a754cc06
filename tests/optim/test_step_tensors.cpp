// tests/optim/test_step_tensors.cpp: Optimizer::step_tensors on CPU tensors (optimizer.h): the
// same bits as doing its passes by hand around step() (widen the 16-bit gradient, multiply by the
// gradient scale, step, round the weights to 16 bit), and its argument checks. The GPU side of
// the same call is tests/gpu/test_cuda_optim.cpp.
#include "core/error.h"
#include "core/tensor.h"
#include "optim/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace zt::optim {
namespace {

std::vector<float> rand_vec(int64_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(StepTensors, MatchesStepWithThePassesDoneByHand) {
  const int64_t n = 1037;
  const std::vector<Segment> segs{{0, 500, true, -1}, {500, 400, false, -1}, {903, 134, true, -1}};
  for (DType gd : {DType::f32, DType::bf16, DType::f16}) {
    for (bool adam_w : {true, false}) {
      AdamParams ap;
      ap.weight_decay = 0.02f;
      ap.adam_w_mode = adam_w;
      auto a = make_adam(ap), b = make_adam(ap);
      a->init(n);
      b->init(n);
      Tensor pa = Tensor::from_vector(rand_vec(n, 1, -1.f, 1.f), {n}), pb = pa.clone();
      Tensor q = Tensor::zeros({n}, DType::bf16);
      for (int step = 0; step < 3; ++step) {
        Tensor g = Tensor::from_vector(rand_vec(n, 10 + step, -500.f, 500.f), {n}).to(gd);
        const float scale = step == 1 ? 1.f : 0.37f / 512.f;
        a->step_tensors(pa, g, segs, 1e-3f, {scale, &q});
        // By hand: widen, scale (one f32 rounding per element), step, round.
        std::vector<float> gf = g.to_vector();
        if (scale != 1.f)
          for (float& x : gf) x *= scale;
        b->step(pb.data<float>(), gf.data(), n, segs, 1e-3f);
        EXPECT_TRUE(same_bits(pa, pb)) << dtype_name(gd) << " step " << step;
        EXPECT_TRUE(same_bits(q, pb.to(DType::bf16))) << dtype_name(gd) << " step " << step;
      }
      auto sa = a->state(), sb = b->state();
      for (size_t k = 0; k < sa.size(); ++k) EXPECT_EQ(*sa[k].second, *sb[k].second);
      EXPECT_EQ(a->state_bytes(), 2 * n * 4);
    }
  }
}

TEST(StepTensors, OtherOptimizersUseTheSamePath) {
  const int64_t n = 100;
  const std::vector<Segment> segs{{0, n, true, 0}};
  auto a = make_lamb({}), b = make_lamb({});
  a->init(n);
  b->init(n);
  Tensor pa = Tensor::from_vector(rand_vec(n, 2, -1.f, 1.f), {n}), pb = pa.clone();
  Tensor g = Tensor::from_vector(rand_vec(n, 3, -1.f, 1.f), {n});
  a->step_tensors(pa, g, segs, 1e-2f, {});
  b->step(pb.data<float>(), g.data<float>(), n, segs, 1e-2f);
  EXPECT_TRUE(same_bits(pa, pb));
}

TEST(StepTensors, RejectsMismatchedArguments) {
  auto a = make_adam({});
  a->init(10);
  const std::vector<Segment> segs{{0, 10, true, -1}};
  Tensor p = Tensor::zeros({10}), g = Tensor::zeros({9});
  EXPECT_THROW(a->step_tensors(p, g, segs, 1e-3f, {}), Error);
  Tensor g10 = Tensor::zeros({10}, DType::i32);
  EXPECT_THROW(a->step_tensors(p, g10, segs, 1e-3f, {}), Error);
  Tensor q32 = Tensor::zeros({10});
  Tensor gf = Tensor::zeros({10});
  EXPECT_THROW(a->step_tensors(p, gf, segs, 1e-3f, {1.f, &q32}), Error);
  EXPECT_THROW(a->step_tensors(p, gf, segs, 1e-3f, {INFINITY, nullptr}), Error);
  EXPECT_EQ(a->step_count(), 0);
}

}  // namespace
}  // namespace zt::optim
