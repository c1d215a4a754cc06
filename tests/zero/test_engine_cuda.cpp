// tests/zero/test_engine_cuda.cpp: the engine with `device: cuda` (EngineSettings::device) against
// the same engine on the CPU, the oracle (CONVENTIONS.md 11), in one process:
//   - one forward/backward of the small GPT: loss and every gradient (f32: the GPU computes in true
//     f32, cuBLASLt without TF32, so only the summation order differs; bf16 weights: looser);
//   - 20 optimizer steps at ZeRO stages 0, 1 and 2, f32 and bf16: the losses step by step, the
//     gradient norms and the final weights;
//   - a checkpoint saved by the GPU engine loads into a CPU engine bit for bit, and back.
// Tolerances are stated per test; they have never been measured (no session had a GPU when they
// were written): a GPU session that finds them too tight should widen them with the numbers seen.
// Without a GPU every test skips itself, saying why. (Two ranks sharing the GPU over the mpi
// backend: tests/zero/test_engine_cuda_mpi.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "core/cuda/device.h"
#include "core/ops.h"
#include "io/data.h"
#include "tests/zero/engine_test_util.h"
#include "zero/engine.h"

namespace zt {
namespace {

#define ZT_REQUIRE_GPU()                                                                \
  do {                                                                                  \
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU: " << cuda::device_summary(); \
  } while (0)

std::vector<float> host_values(const Tensor& t) {
  if (t.device().is_cpu()) return t.to_vector();
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  ops::copy(t, h);
  return h.to_vector();
}

zero::EngineSettings settings(int stage, DType dtype, Device device) {
  zero::EngineSettings s;
  s.device = device;
  s.zero_stage = stage;
  s.micro_batch = 4;
  s.gradient_accumulation_steps = 1;
  s.gradient_clipping = 0.5;  // exercised: the norm comes from the device's sum of squares
  s.model_dtype = dtype;
  s.adam.weight_decay = 0.1f;
  s.scheduler = optim::make_warmup_lr({0.0, 1e-2, 5, optim::WarmupType::linear});
  return s;
}

// max |a - b| / max |b|: gradients span orders of magnitude, so they are compared against the
// largest of their buffer.
double rel_max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, m = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    d = std::max(d, std::abs(static_cast<double>(a[i]) - b[i]));
    m = std::max(m, std::abs(static_cast<double>(b[i])));
  }
  return m > 0 ? d / m : d;
}

void compare_one_backward(DType dtype, double loss_tol, double grad_tol) {
  const nn::GPTConfig cfg = test::small_gpt();
  nn::GPT cpu_model(cfg), gpu_model(cfg);
  cpu_model.init_weights(42);
  gpu_model.init_weights(42);
  zero::Engine cpu(cpu_model, settings(0, dtype, Device::cpu()));
  zero::Engine gpu(gpu_model, settings(0, dtype, Device::cuda(0)));
  ASSERT_TRUE(gpu.flat_params().device().is_cuda()) << gpu.flat_params().str();
  // The weights start equal: the GPU engine's are the CPU's, copied up (and rounded alike).
  EXPECT_EQ(host_values(gpu.model_params()), host_values(cpu.model_params()));

  io::TokenStream data = test::pattern_data();
  io::WindowSampler sampler(data, 4, cfg.seq_len, 7);
  Tensor ids, tgt;
  sampler.next(ids, tgt);
  const float lc = cpu.forward(ids, tgt), lg = gpu.forward(ids, tgt);
  cpu.backward();
  gpu.backward();
  EXPECT_NEAR(lg, lc, loss_tol * std::abs(lc)) << dtype_name(dtype);
  const std::vector<float> gc = host_values(cpu.flat_grads()), gg = host_values(gpu.flat_grads());
  ASSERT_EQ(gc.size(), gg.size());
  const double d = rel_max_diff(gg, gc);
  EXPECT_LT(d, grad_tol) << dtype_name(dtype) << ": gradients differ by " << d
                         << " of the largest";
  // Per tensor too, so that a wrong kernel is named rather than averaged away.
  for (nn::Parameter* p : cpu_model.parameters()) {
    const auto a = std::vector<float>(gg.begin() + p->flat_offset,
                                      gg.begin() + p->flat_offset + p->numel());
    const auto b = std::vector<float>(gc.begin() + p->flat_offset,
                                      gc.begin() + p->flat_offset + p->numel());
    EXPECT_LT(rel_max_diff(a, b), 10 * grad_tol) << p->name;
  }
  ::testing::Test::RecordProperty("grad_rel_max_diff", std::to_string(d));
}

TEST(EngineCuda, GptLossAndGradientsMatchTheCpuF32) {
  ZT_REQUIRE_GPU();
  // f32 weights and activations on both sides, but the GPU's attention is cuDNN's fused kernel,
  // which computes in bf16 (core/cuda/attention.h: f32 inputs are cast): bf16 tolerances, as the
  // issue asks ("to bf16 tolerance"); the layers alone are compared in f32 by tests/gpu.
  compare_one_backward(DType::f32, 5e-3, 3e-2);
}

TEST(EngineCuda, GptLossAndGradientsMatchTheCpuBf16) {
  ZT_REQUIRE_GPU();
  // Same bf16 weights; the compute copy is f32 on both sides today, but a GPU backend that
  // computes in bf16 is allowed 2^-8 relative per rounding, a few roundings deep.
  compare_one_backward(DType::bf16, 1e-2, 3e-2);
}

// 20 steps on the GPU and on the CPU from the same weights and batches.
void compare_training(int stage, DType dtype, double loss_tol, double param_tol) {
  const nn::GPTConfig cfg = test::small_gpt();
  nn::GPT cpu_model(cfg), gpu_model(cfg);
  cpu_model.init_weights(42);
  gpu_model.init_weights(42);
  zero::Engine cpu(cpu_model, settings(stage, dtype, Device::cpu()));
  zero::Engine gpu(gpu_model, settings(stage, dtype, Device::cuda(0)));
  io::TokenStream data = test::pattern_data();
  io::WindowSampler a(data, 4, cfg.seq_len, 7), b(data, 4, cfg.seq_len, 7);
  Tensor ids, tgt;
  double worst = 0;
  for (int step = 0; step < 20; ++step) {
    a.next(ids, tgt);
    const double lc = cpu.forward(ids, tgt);
    cpu.backward();
    EXPECT_TRUE(cpu.step());
    b.next(ids, tgt);
    const double lg = gpu.forward(ids, tgt);
    gpu.backward();
    EXPECT_TRUE(gpu.step());
    const double rel = std::abs(lg - lc) / std::abs(lc);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, loss_tol) << "stage " << stage << " " << dtype_name(dtype) << " step " << step
                             << ": loss " << lg << " on the GPU, " << lc << " on the CPU";
    EXPECT_NEAR(gpu.grad_norm(), cpu.grad_norm(), 10 * loss_tol * cpu.grad_norm())
        << "step " << step;
    EXPECT_FALSE(gpu.last_step_skipped());
  }
  EXPECT_EQ(gpu.global_step(), 20);
  const auto wg = host_values(gpu.model_params()), wc = host_values(cpu.model_params());
  double d = 0, n = 0;
  for (int64_t i = 0; i < cpu.num_parameters(); ++i) {
    d += (static_cast<double>(wg[i]) - wc[i]) * (static_cast<double>(wg[i]) - wc[i]);
    n += static_cast<double>(wc[i]) * wc[i];
  }
  EXPECT_LT(std::sqrt(d / n), param_tol) << "stage " << stage << " " << dtype_name(dtype);
  ::testing::Test::RecordProperty("worst_relative_loss_difference", std::to_string(worst));
}

// f32: the attention runs in bf16 on the GPU (see above), and Adam divides by sqrt(v), so the
// differences grow over 20 steps: the bf16 runs' tolerances.
TEST(EngineCuda, Stage0TrainsLikeTheCpuF32) {
  ZT_REQUIRE_GPU();
  compare_training(0, DType::f32, 5e-3, 1e-2);
}
TEST(EngineCuda, Stage1TrainsLikeTheCpuF32) {
  ZT_REQUIRE_GPU();
  compare_training(1, DType::f32, 5e-3, 1e-2);
}
TEST(EngineCuda, Stage2TrainsLikeTheCpuF32) {
  ZT_REQUIRE_GPU();
  compare_training(2, DType::f32, 5e-3, 1e-2);
}
// bf16: a master value a hair away rounds to the neighbouring bf16 (2^-8 relative), as between the
// CPU's reduction orders (tests/zero/test_engine_mpi.cpp allows 2e-3 / 5e-3 there).
TEST(EngineCuda, Stage0TrainsLikeTheCpuBf16) {
  ZT_REQUIRE_GPU();
  compare_training(0, DType::bf16, 5e-3, 1e-2);
}
TEST(EngineCuda, Stage1TrainsLikeTheCpuBf16) {
  ZT_REQUIRE_GPU();
  compare_training(1, DType::bf16, 5e-3, 1e-2);
}
TEST(EngineCuda, Stage2TrainsLikeTheCpuBf16) {
  ZT_REQUIRE_GPU();
  compare_training(2, DType::bf16, 5e-3, 1e-2);
}

TEST(EngineCuda, LambStepsOnTheHostLikeTheCpu) {
  ZT_REQUIRE_GPU();
  // No device kernel for Lamb: the engine steps it on the host from the GPU's gradients (engine.h),
  // so only the forward/backward kernels differ from the CPU run.
  const nn::GPTConfig cfg = test::small_gpt();
  nn::GPT cm(cfg), gm(cfg);
  cm.init_weights(42);
  gm.init_weights(42);
  zero::EngineSettings sc = settings(1, DType::f32, Device::cpu());
  sc.optimizer_kind = optim::OptimizerKind::lamb;
  zero::EngineSettings sg = sc;
  sg.device = Device::cuda(0);
  zero::Engine cpu(cm, sc), gpu(gm, sg);
  io::TokenStream data = test::pattern_data();
  io::WindowSampler a(data, 4, cfg.seq_len, 7), b(data, 4, cfg.seq_len, 7);
  Tensor ids, tgt;
  for (int step = 0; step < 10; ++step) {
    a.next(ids, tgt);
    const double lc = cpu.forward(ids, tgt);
    cpu.backward();
    cpu.step();
    b.next(ids, tgt);
    const double lg = gpu.forward(ids, tgt);
    gpu.backward();
    gpu.step();
    EXPECT_LT(std::abs(lg - lc) / lc, 1e-4) << "step " << step;
  }
  EXPECT_TRUE(gpu.flat_params().device().is_cuda());
}

TEST(EngineCuda, Fp16WithLossScaleTrains) {
  ZT_REQUIRE_GPU();
  // fp16: the scaled gradients, the overflow test (all_finite on the device) and the unscale.
  zero::EngineSettings s = settings(2, DType::f16, Device::cuda(0));
  s.loss_scaler.initial_scale_power = 12;
  const nn::GPTConfig cfg = test::small_gpt();
  nn::GPT model(cfg);
  model.init_weights(42);
  zero::Engine gpu(model, s);
  io::TokenStream data = test::pattern_data();
  io::WindowSampler sampler(data, 4, cfg.seq_len, 7);
  Tensor ids, tgt;
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    sampler.next(ids, tgt);
    last = gpu.forward(ids, tgt);
    if (step == 0) first = last;
    gpu.backward();
    gpu.step();
  }
  EXPECT_LT(gpu.skipped_steps(), 5);
  EXPECT_LT(last, first) << "fp16 on the GPU did not learn";
}

TEST(EngineCuda, CheckpointMovesBetweenGpuAndCpu) {
  ZT_REQUIRE_GPU();
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("zt_engine_cuda_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const nn::GPTConfig cfg = test::small_gpt();
  nn::GPT gm(cfg), cm(cfg), gm2(cfg);
  gm.init_weights(42);
  cm.init_weights(7);
  gm2.init_weights(9);
  zero::Engine gpu(gm, settings(1, DType::bf16, Device::cuda(0)));
  io::TokenStream data = test::pattern_data();
  io::WindowSampler sampler(data, 4, cfg.seq_len, 7);
  Tensor ids, tgt;
  for (int step = 0; step < 3; ++step) {
    sampler.next(ids, tgt);
    gpu.forward(ids, tgt);
    gpu.backward();
    gpu.step();
  }
  gpu.save_checkpoint(dir.string());
  EXPECT_TRUE(gpu.flat_params().device().is_cuda()) << "the device buffers are back after a save";
  zero::Engine cpu(cm, settings(1, DType::bf16, Device::cpu()));
  cpu.load_checkpoint(dir.string());
  EXPECT_EQ(host_values(cpu.model_params()), host_values(gpu.model_params()));
  zero::Engine gpu2(gm2, settings(1, DType::bf16, Device::cuda(0)));
  gpu2.load_checkpoint(dir.string());
  EXPECT_TRUE(gpu2.flat_params().device().is_cuda());
  EXPECT_EQ(host_values(gpu2.model_params()), host_values(gpu.model_params()));
  // The next step continues identically from the loaded state on the GPU.
  io::WindowSampler s1(data, 4, cfg.seq_len, 11), s2(data, 4, cfg.seq_len, 11);
  s1.next(ids, tgt);
  const float l1 = gpu.forward(ids, tgt);
  s2.next(ids, tgt);
  const float l2 = gpu2.forward(ids, tgt);
  EXPECT_EQ(l1, l2);
  fs::remove_all(dir);
}

TEST(EngineCuda, Stage3AndOffloadSayNotYetOnCuda) {
  ZT_REQUIRE_GPU();
  const nn::GPTConfig cfg = test::small_gpt();
  nn::GPT model(cfg);
  model.init_weights(42);
  try {
    zero::Engine e(model, settings(3, DType::f32, Device::cuda(0)));
    ADD_FAILURE() << "stage 3 on CUDA was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not yet on CUDA"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace zt
