// tests/gpu/test_cuda_optim.cpp: the device optimizer step and mixed precision on the GPU (issue #5)
// against the CPU, the oracle (CONVENTIONS.md 11):
//   - fused Adam/AdamW (core/cuda/optim.cu through optim::Optimizer::step_tensors) against the CPU
//     Adam (optim/adam.cpp through the same call on CPU tensors) on random data: sizes that are
//     not multiples of 4 or 8, segments at odd offsets (scalar heads), tensors viewed at unaligned
//     offsets (the all-scalar path), f32/bf16/f16 gradients with a gradient scale, with and without
//     the 16-bit weight copy, Adam and AdamW, several steps, and the state copied down mid-run.
//     Bound: 0 ulp. Both sides compute every operation IEEE-rounded in the same order (explicit
//     __f*_rn intrinsics on the GPU, the pinned order of optim/adam.cpp on the CPU), from the same
//     coefficients, so p, m, v and the 16-bit copy must agree bit for bit; any difference is a
//     bug (a contraction, an approximate sqrt/division, a flushed denormal), not noise.
//   - the fused overflow + sum-of-squares check against precision::has_inf_or_nan / sum_squares:
//     flag exact, NaN/Inf at the first, a middle and the last element; sums within 1e-12 relative
//     (the GPU adds in another order, in double); many tensors of mixed dtypes in one check.
//   - the loss scaler fed by the device check: skips and lowers the scale exactly like the CPU's.
//   - Lamb and the 1-bit optimizers refuse CUDA tensors with "not implemented on CUDA yet".
// Without a GPU every test skips itself with the reason.
#include "core/cuda/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "optim/optimizer.h"
#include "precision/loss_scaler.h"
#include "precision/overflow.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using zt::Device;
using zt::DType;
using zt::Tensor;
namespace ops = zt::ops;
namespace optim = zt::optim;
namespace precision = zt::precision;

#define ZT_SKIP_WITHOUT_GPU()                                                     \
  do {                                                                            \
    if (zt::cuda::device_count() == 0)                                            \
      GTEST_SKIP() << "no GPU: " << zt::cuda::device_summary();                   \
  } while (0)

std::vector<float> rand_vec(int64_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// A host tensor of dtype dt holding v (rounded), viewed `offset` elements into a larger buffer.
Tensor host_view(const std::vector<float>& v, DType dt, int64_t offset) {
  const int64_t n = static_cast<int64_t>(v.size());
  Tensor base = Tensor::zeros({n + offset}, dt);
  Tensor view = base.flat_view(offset, {n});
  ops::copy(Tensor::from_vector(v, {n}), view);
  return view;
}
// The same on the GPU (the bytes of the host view, at the same offset).
Tensor gpu_view(const Tensor& host, int64_t offset) {
  Tensor base = Tensor::zeros({host.numel() + offset}, host.dtype(), Device::cuda());
  Tensor view = base.flat_view(offset, {host.numel()});
  ops::copy(host, view);
  return view;
}
Tensor download(const Tensor& d) {
  Tensor h = Tensor::empty(d.shape(), d.dtype());
  ops::copy(d, h);
  return h;
}

// Bitwise comparison of two host tensors of one dtype; reports the first few differences.
void expect_same_bits(const Tensor& gpu_host, const Tensor& cpu, const std::string& what) {
  ASSERT_EQ(gpu_host.dtype(), cpu.dtype()) << what;
  ASSERT_EQ(gpu_host.numel(), cpu.numel()) << what;
  const size_t es = zt::dtype_size(cpu.dtype());
  const auto* a = static_cast<const unsigned char*>(gpu_host.raw());
  const auto* b = static_cast<const unsigned char*>(cpu.raw());
  int64_t bad = 0;
  for (int64_t i = 0; i < cpu.numel(); ++i) {
    if (std::memcmp(a + i * es, b + i * es, es) == 0) continue;
    if (++bad <= 5) {
      const float ga = gpu_host.flat_view(i, {1}).to_vector()[0];
      const float cb = cpu.flat_view(i, {1}).to_vector()[0];
      ADD_FAILURE() << what << "[" << i << "]: gpu " << ga << ", cpu " << cb;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << cpu.numel() << " elements differ";
}
void expect_same_bits(const std::vector<float>& gpu, const std::vector<float>& cpu,
                      const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  const int64_t n = static_cast<int64_t>(cpu.size());
  expect_same_bits(Tensor::from_vector(gpu, {n}), Tensor::from_vector(cpu, {n}), what);
}

// ---- fused Adam / AdamW against the CPU -------------------------------------------------------
struct AdamCase {
  int64_t n;
  DType grad;      // f32, bf16, f16
  DType copy16;    // bf16, f16, or i32 for "no 16-bit copy"
  int64_t offset;  // element offset of the parameter/gradient/copy views (0: aligned)
  bool adam_w;
};

std::string case_name(const ::testing::TestParamInfo<AdamCase>& i) {
  const AdamCase& c = i.param;
  return std::string("n") + std::to_string(c.n) + "_g" + zt::dtype_name(c.grad) + "_" +
         (c.copy16 == DType::i32 ? std::string("nocopy") : std::string(zt::dtype_name(c.copy16))) +
         "_off" + std::to_string(c.offset) + (c.adam_w ? "_adamw" : "_adam");
}

// Segments at odd offsets with both decay choices and a gap that no segment covers.
std::vector<optim::Segment> segments_for(int64_t n) {
  std::vector<optim::Segment> s;
  if (n < 64) return {{0, n, true, -1}};
  const int64_t a = n / 3 + 1, b = a + n / 4 + 3;  // [0, a) decay, [a, b) none, gap, [b+5, n)
  s.push_back({0, a, true, -1});
  s.push_back({a, b - a, false, -1});
  s.push_back({b + 5, n - b - 5, true, -1});
  return s;
}

class CudaAdam : public ::testing::TestWithParam<AdamCase> {
 protected:
  void SetUp() override { ZT_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaAdam, MatchesCpuBitForBit) {
  const AdamCase c = GetParam();
  optim::AdamParams ap;
  ap.beta1 = 0.85f;
  ap.beta2 = 0.995f;
  ap.eps = 1e-7f;
  ap.weight_decay = 0.05f;
  ap.adam_w_mode = c.adam_w;
  auto cpu = optim::make_adam(ap), gpu = optim::make_adam(ap);
  cpu->init(c.n);
  gpu->init(c.n);
  const auto segs = segments_for(c.n);
  const bool copy = c.copy16 != DType::i32;

  Tensor p_cpu = host_view(rand_vec(c.n, 11), DType::f32, c.offset);
  Tensor p_gpu = gpu_view(p_cpu, c.offset);
  Tensor q_cpu, q_gpu;
  if (copy) {
    q_cpu = host_view(std::vector<float>(static_cast<size_t>(c.n), 0.f), c.copy16, c.offset);
    q_gpu = gpu_view(q_cpu, c.offset);
  }
  const float lrs[] = {1e-3f, 3e-3f, 2e-3f, 5e-4f};
  for (int step = 0; step < 4; ++step) {
    // Scaled 16-bit-range gradients (a loss scale of 1024), unscaled and clipped in the step.
    Tensor g_cpu = host_view(rand_vec(c.n, 100 + step, -1024.f, 1024.f), c.grad, 2 * c.offset);
    Tensor g_gpu = gpu_view(g_cpu, 2 * c.offset);
    const float scale = 0.7f / 1024.f;
    optim::StepExtras x_cpu{scale, copy ? &q_cpu : nullptr};
    optim::StepExtras x_gpu{scale, copy ? &q_gpu : nullptr};
    cpu->step_tensors(p_cpu, g_cpu, segs, lrs[step], x_cpu);
    gpu->step_tensors(p_gpu, g_gpu, segs, lrs[step], x_gpu);
    const std::string at = " after step " + std::to_string(step + 1);
    expect_same_bits(download(p_gpu), p_cpu, "params" + at);
    if (copy) expect_same_bits(download(q_gpu), q_cpu, "params16" + at);
    if (step == 1) {  // the state copied down (a checkpoint) and uploaded again by the next step
      auto sg = gpu->state(), sc = cpu->state();
      ASSERT_EQ(sg.size(), 2u);
      for (size_t k = 0; k < sg.size(); ++k)
        expect_same_bits(*sg[k].second, *sc[k].second, sg[k].first + at);
    }
  }
  EXPECT_EQ(gpu->state_bytes(), 2 * c.n * 4);  // on the GPU: counted without copying it down
  auto sg = gpu->state(), sc = cpu->state();
  for (size_t k = 0; k < sg.size(); ++k)
    expect_same_bits(*sg[k].second, *sc[k].second, sg[k].first + " at the end");
  EXPECT_EQ(gpu->step_count(), 4);
}

std::vector<AdamCase> adam_cases() {
  std::vector<AdamCase> v;
  for (int64_t n : {1, 3, 5, 8, 17, 1000, 4095, 4097, 12347, 70001})
    for (DType g : {DType::f32, DType::bf16, DType::f16})
      v.push_back({n, g, n % 2 ? DType::bf16 : DType::f16, 0, n % 3 == 0});
  for (DType q : {DType::i32, DType::bf16, DType::f16})
    for (int64_t off : {0, 1, 3}) v.push_back({9999, DType::bf16, q, off, off != 1});
  v.push_back({1 << 20, DType::f32, DType::i32, 0, true});  // many chunks, the persistent grid
  return v;
}
INSTANTIATE_TEST_SUITE_P(Cases, CudaAdam, ::testing::ValuesIn(adam_cases()), case_name);

TEST(CudaOptim, StateLoadedOnTheHostIsUploaded) {
  ZT_SKIP_WITHOUT_GPU();
  const int64_t n = 333;
  optim::AdamParams ap;
  auto cpu = optim::make_adam(ap), gpu = optim::make_adam(ap);
  cpu->init(n);
  gpu->init(n);
  // A "checkpoint": m, v and the step count written through state() before the first step.
  for (auto* o : {cpu.get(), gpu.get()}) {
    auto st = o->state();
    *st[0].second = rand_vec(n, 5, -0.1f, 0.1f);
    *st[1].second = rand_vec(n, 6, 0.f, 0.01f);
    o->set_step_count(7);
  }
  Tensor p = Tensor::from_vector(rand_vec(n, 7), {n}), g = Tensor::from_vector(rand_vec(n, 8), {n});
  Tensor pd = gpu_view(p, 0), gd = gpu_view(g, 0);
  const std::vector<optim::Segment> segs{{0, n, true, -1}};
  cpu->step_tensors(p, g, segs, 1e-3f, {});
  gpu->step_tensors(pd, gd, segs, 1e-3f, {});
  expect_same_bits(download(pd), p, "params");
}

TEST(CudaOptim, LambAndOneBitRefuseCuda) {
  ZT_SKIP_WITHOUT_GPU();
  const int64_t n = 64;
  Tensor p = Tensor::zeros({n}, DType::f32, Device::cuda());
  Tensor g = Tensor::zeros({n}, DType::f32, Device::cuda());
  const std::vector<optim::Segment> segs{{0, n, true, 0}};
  std::vector<std::unique_ptr<optim::Optimizer>> opts;
  opts.push_back(optim::make_lamb({}));
  opts.push_back(optim::make_onebit_adam({}));
  opts.push_back(optim::make_zero_one_adam({}));
  opts.push_back(optim::make_onebit_lamb({}));
  for (auto& o : opts) {
    o->init(n);
    try {
      o->step_tensors(p, g, segs, 1e-3f, {});
      ADD_FAILURE() << o->name() << " stepped CUDA tensors";
    } catch (const zt::Error& e) {
      EXPECT_NE(std::string(e.what()).find("not implemented on CUDA yet"), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(o->step_count(), 0) << o->name();
  }
}

// ---- overflow + sum of squares ------------------------------------------------------------------
class CudaGradCheck : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override { ZT_SKIP_WITHOUT_GPU(); }
};

void expect_sum_near(double gpu, double cpu, const std::string& what) {
  EXPECT_LE(std::fabs(gpu - cpu), 1e-12 * std::fabs(cpu)) << what << ": gpu " << gpu << " cpu "
                                                           << cpu;
}

TEST_P(CudaGradCheck, FiniteSumsMatchCpu) {
  const DType dt = GetParam();
  for (int64_t n : {1, 7, 8, 9, 1000, 65537, (1 << 20) + 3}) {
    for (int64_t off : {0, 1, 5}) {
      Tensor h = host_view(rand_vec(n, static_cast<uint32_t>(n + off), -30.f, 30.f), dt, off);
      Tensor d = gpu_view(h, off);
      const precision::GradCheck c = precision::check_gradients(d);
      const std::string what = std::string(zt::dtype_name(dt)) + " n=" + std::to_string(n) +
                               " off=" + std::to_string(off);
      EXPECT_FALSE(c.overflow) << what;
      expect_sum_near(c.sum_squares, precision::sum_squares(h), what);
      EXPECT_FALSE(precision::has_inf_or_nan(d)) << what;
    }
  }
}

TEST_P(CudaGradCheck, NonFiniteAtFirstMiddleLast) {
  const DType dt = GetParam();
  const float bad_values[] = {std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN()};
  for (int64_t n : {1, 9, 4099, 300001}) {
    for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
      for (float bad : bad_values) {
        std::vector<float> v = rand_vec(n, 3);
        v[static_cast<size_t>(pos)] = bad;
        Tensor h = host_view(v, dt, 1);
        Tensor d = gpu_view(h, 1);
        const std::string what = std::string(zt::dtype_name(dt)) + " n=" + std::to_string(n) +
                                 " at " + std::to_string(pos) + " value " + std::to_string(bad);
        ASSERT_TRUE(precision::has_inf_or_nan(h)) << what;  // the CPU oracle agrees
        EXPECT_TRUE(precision::check_gradients(d).overflow) << what;
        EXPECT_TRUE(precision::has_inf_or_nan(d)) << what;
      }
    }
  }
  // Large finite values whose squares overflow f32 are not an overflow (the sum is in double).
  Tensor big = gpu_view(host_view(std::vector<float>(100, dt == DType::f16 ? 60000.f : 3e38f), dt,
                                  0), 0);
  EXPECT_FALSE(precision::check_gradients(big).overflow);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaGradCheck,
                         ::testing::Values(DType::f32, DType::bf16, DType::f16),
                         [](const auto& i) { return std::string(zt::dtype_name(i.param)); });

TEST(CudaOptim, GradCheckerOverManyTensorsReadsOnce) {
  ZT_SKIP_WITHOUT_GPU();
  // 70 tensors of three dtypes: more than one launch per dtype (64 tensors a launch).
  std::vector<Tensor> host, dev;
  double want = 0.0;
  const DType dts[] = {DType::f32, DType::bf16, DType::f16};
  for (int i = 0; i < 70; ++i) {
    const int64_t n = 1 + (i * 7919) % 5000;
    Tensor h = host_view(rand_vec(n, 1000 + i, -4.f, 4.f), dts[i % 3], i % 4);
    host.push_back(h);
    dev.push_back(gpu_view(h, i % 4));
    want += precision::sum_squares(h);
  }
  precision::GradChecker check(Device::cuda());
  check.add(dev);
  precision::GradCheck c = check.read();
  EXPECT_FALSE(c.overflow);
  expect_sum_near(c.sum_squares, want, "70 tensors");
  // Same tensors one by one: the same result (the accumulator was reset by read()).
  for (const Tensor& d : dev) check.add(d);
  c = check.read();
  EXPECT_FALSE(c.overflow);
  expect_sum_near(c.sum_squares, want, "70 tensors one by one");
  // An inf in the 67th tensor (the second launch of its dtype).
  std::vector<float> hv = host[66].to_vector();
  hv.back() = std::numeric_limits<float>::infinity();
  dev[66] = gpu_view(host_view(hv, host[66].dtype(), 0), 0);
  check.add(dev);
  EXPECT_TRUE(check.read().overflow);
  check.add(dev[0]);
  EXPECT_FALSE(check.read().overflow) << "read() must reset the flag";
}

// ---- the loss scaler fed by the device check ------------------------------------------------------
TEST(CudaOptim, LossScalerSkipsAndLowersLikeCpu) {
  ZT_SKIP_WITHOUT_GPU();
  precision::LossScalerOptions o;
  o.initial_scale_power = 10;
  o.loss_scale_window = 3;
  o.hysteresis = 2;
  precision::LossScaler s_cpu(o), s_gpu(o);
  const int64_t n = 5003;
  optim::AdamParams ap;
  auto a_cpu = optim::make_adam(ap), a_gpu = optim::make_adam(ap);
  a_cpu->init(n);
  a_gpu->init(n);
  const std::vector<optim::Segment> segs{{0, n, true, -1}};
  Tensor p_cpu = Tensor::from_vector(rand_vec(n, 21), {n});
  Tensor p_gpu = gpu_view(p_cpu, 0);
  Tensor q_cpu = Tensor::zeros({n}, DType::f16), q_gpu = Tensor::zeros({n}, DType::f16,
                                                                       Device::cuda());
  precision::GradChecker c_cpu(Device::cpu()), c_gpu(Device::cuda());
  // Overflow pattern: hysteresis absorbs the first, the second lowers, a later one lowers again;
  // windows of 3 good steps raise the scale.
  const bool overflow_at[] = {false, true, true, false, false, false, false, true, true, false};
  int skipped = 0;
  for (int step = 0; step < 10; ++step) {
    std::vector<float> gv = rand_vec(n, 300 + step, -100.f, 100.f);
    if (overflow_at[step]) gv[static_cast<size_t>(step * 311) % gv.size()] = INFINITY;
    Tensor g_cpu = host_view(gv, DType::f16, 0);
    Tensor g_gpu = gpu_view(g_cpu, 0);
    c_cpu.add(g_cpu);
    c_gpu.add(g_gpu);
    const precision::GradCheck k_cpu = c_cpu.read(), k_gpu = c_gpu.read();
    ASSERT_EQ(k_gpu.overflow, overflow_at[step]) << "step " << step;
    const precision::ScaleUpdate u_cpu = s_cpu.update(k_cpu), u_gpu = s_gpu.update(k_gpu);
    EXPECT_EQ(u_gpu.skipped, u_cpu.skipped) << "step " << step;
    EXPECT_EQ(u_gpu.event, u_cpu.event) << "step " << step;
    EXPECT_EQ(u_gpu.scale_after, u_cpu.scale_after) << "step " << step;
    EXPECT_EQ(s_gpu.state(), s_cpu.state()) << "step " << step;
    if (u_gpu.skipped) {
      ++skipped;
      continue;  // neither optimizer moves
    }
    // No clipping: the multiplier is 1/S on both sides, exactly, so the weights stay bitwise equal.
    // (S is the scale the gradients were made with: the one before update() raised it.)
    const float mult_cpu = static_cast<float>(
        precision::unscale_and_clip(std::sqrt(k_cpu.sum_squares), u_cpu.scale_before, 0.0)
            .multiplier);
    const float mult_gpu = static_cast<float>(
        precision::unscale_and_clip(std::sqrt(k_gpu.sum_squares), u_gpu.scale_before, 0.0)
            .multiplier);
    ASSERT_EQ(mult_gpu, mult_cpu);
    a_cpu->step_tensors(p_cpu, g_cpu, segs, 1e-3f, {mult_cpu, &q_cpu});
    a_gpu->step_tensors(p_gpu, g_gpu, segs, 1e-3f, {mult_gpu, &q_gpu});
  }
  EXPECT_EQ(skipped, 4);
  EXPECT_EQ(a_gpu->step_count(), a_cpu->step_count());
  EXPECT_LT(s_gpu.scale(), 1024.0);
  expect_same_bits(download(p_gpu), p_cpu, "params after the run");
  expect_same_bits(download(q_gpu), q_cpu, "f16 weights after the run");
}

}  // namespace
