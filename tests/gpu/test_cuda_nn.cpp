// tests/gpu/test_cuda_nn.cpp: core/nn on a GPU against the same layers on the CPU (the oracle,
// CONVENTIONS.md 11). A layer computes where its parameters and inputs are: every activation,
// saved tensor and workspace follows them (ensure_like, core/nn/module.h), so moving the
// parameters (Parameter::rebind) and the batch to the GPU is all it takes.
//   - each small layer (Linear, LayerNorm, GELU, MLP, Embedding) in f32: outputs, input gradients
//     and parameter gradients; only the summation order differs (cuBLASLt runs true f32, no TF32);
//   - the tiny GPT (tied and untied head, with and without activation checkpointing): the loss and
//     every parameter gradient. The same model object runs on the CPU first and is then moved, so
//     buffers allocated on the host must follow it to the GPU (and the cached position ids too).
//     Attention is cuDNN's flash attention, which has no f32 mode: f32 runs through bf16
//     (core/cuda/attention.h), so these tolerances are bf16's, not f32's.
// Tolerances are stated per test and have never been measured (no session with a GPU has run this
// yet): a GPU session that finds one too tight should widen it with the numbers it saw.
// Without a GPU every test skips itself, saying why.
#include "core/cuda/device.h"
#include "core/nn/gpt.h"
#include "core/ops.h"
#include "core/tensor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace zt {
namespace {

#define ZT_REQUIRE_GPU()                                                                \
  do {                                                                                  \
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU: " << cuda::device_summary(); \
  } while (0)

const Device kGpu = Device::cuda(0);

std::vector<float> host_values(const Tensor& t) {
  if (t.device().is_cpu()) return t.to_vector();
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  ops::copy(t, h);
  return h.to_vector();
}

Tensor on(const Tensor& h, Device d) {
  Tensor t = Tensor::empty(h.shape(), h.dtype(), d);
  ops::copy(h, t);
  return t;
}

Tensor rand_host(Shape shape, std::mt19937_64& rng, float scale = 1.f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = u(rng);
  return Tensor::from_vector(v, std::move(shape));
}

Tensor ids_host(Shape shape, int32_t limit, std::mt19937_64& rng) {
  Tensor t = Tensor::empty(std::move(shape), DType::i32);
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<int32_t>(rng() % limit);
  return t;
}

// Random parameter values (LayerNorm weights around 1), so that no gradient is trivially zero.
void randomize(nn::Module& m, std::mt19937_64& rng) {
  for (nn::Parameter* p : m.parameters()) {
    Tensor v = rand_host(p->shape, rng, 0.5f);
    if (p->name.find("ln") != std::string::npos && p->name.find("weight") != std::string::npos)
      for (int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] += 1.f;
    ops::copy(v, p->value);
  }
}

// Moves every parameter of `m` to `d`, values copied, gradients zero there.
void move_parameters(nn::Module& m, Device d) {
  for (nn::Parameter* p : m.parameters())
    p->rebind(Tensor::empty(p->shape, DType::f32, d), Tensor::zeros(p->shape, DType::f32, d));
}

std::map<std::string, std::vector<float>> grads_of(nn::Module& m) {
  std::map<std::string, std::vector<float>> g;
  for (nn::Parameter* p : m.parameters()) g[p->name] = host_values(p->grad);
  return g;
}

// max |got - want| / max |want|: gradients span orders of magnitude, so a tensor is compared
// against its own largest value.
double rel_max_diff(const std::vector<float>& got, const std::vector<float>& want) {
  double d = 0, m = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    d = std::max(d, std::abs(static_cast<double>(got[i]) - want[i]));
    m = std::max(m, std::abs(static_cast<double>(want[i])));
  }
  return m > 0 ? d / m : d;
}

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  const std::vector<float> g = host_values(got), w = host_values(want);
  ASSERT_EQ(g.size(), w.size()) << what;
  const double d = rel_max_diff(g, w);
  EXPECT_LE(d, tol) << what << ": differs by " << d << " of its largest value";
}

// Every activation buffer that holds something lives on `d` (none was left on the host).
void expect_buffers_on(nn::Module& m, Device d, const std::string& what) {
  int n = 0;
  for (Tensor* t : m.activation_buffers()) {
    if (!t->defined()) continue;
    ++n;
    EXPECT_EQ(t->device(), d) << what << ": activation buffer " << t->str();
  }
  EXPECT_GT(n, 0) << what;
}

// ---- the small layers, f32 ---------------------------------------------------------------------
// Outputs and gradients within 1e-4 of their largest value (sums of up to 256 products in another
// order: about 1e-6 expected; 1e-4 leaves room and still catches any wrong kernel or buffer).
constexpr double kLayerTol = 1e-4;

// Runs `layer` forward and backward on the CPU, then on the GPU (the same object, moved), and
// compares output, input gradient and parameter gradients.
template <typename Layer>
void compare_layer(Layer& layer, const Tensor& x, const Tensor& dy, const std::string& what) {
  layer.zero_grad();
  const Tensor y_cpu = layer.forward(x).clone();
  const Tensor dx_cpu = layer.backward(dy).clone();
  const auto g_cpu = grads_of(layer);
  move_parameters(layer, kGpu);
  const Tensor y = layer.forward(on(x, kGpu));
  EXPECT_TRUE(y.device().is_cuda()) << what << ": output " << y.str();
  expect_close(y, y_cpu, kLayerTol, what + " forward");
  const Tensor dx = layer.backward(on(dy, kGpu));
  EXPECT_TRUE(dx.device().is_cuda()) << what << ": dx " << dx.str();
  expect_close(dx, dx_cpu, kLayerTol, what + " dx");
  for (const auto& [name, g] : grads_of(layer))
    EXPECT_LT(rel_max_diff(g, g_cpu.at(name)), kLayerTol) << what << " grad " << name;
  expect_buffers_on(layer, kGpu, what);
}

TEST(CudaNN, LayersMatchTheCpuF32) {
  ZT_REQUIRE_GPU();
  std::mt19937_64 rng(3);
  const int64_t rows = 24, C = 64;
  {
    nn::Linear l(C, 3 * C);
    randomize(l, rng);
    compare_layer(l, rand_host({rows, C}, rng), rand_host({rows, 3 * C}, rng), "Linear");
  }
  {
    nn::LayerNorm l(C);
    randomize(l, rng);
    compare_layer(l, rand_host({rows, C}, rng, 2.f), rand_host({rows, C}, rng), "LayerNorm");
  }
  {
    nn::GELU l;
    compare_layer(l, rand_host({rows, C}, rng, 3.f), rand_host({rows, C}, rng), "GELU");
  }
  {
    nn::MLP l(C, 4 * C);
    randomize(l, rng);
    compare_layer(l, rand_host({rows, C}, rng), rand_host({rows, C}, rng), "MLP");
  }
  {
    nn::Embedding e(50, C);
    randomize(e, rng);
    const Tensor ids = ids_host({rows}, 50, rng), dy = rand_host({rows, C}, rng);
    const Tensor y_cpu = e.forward(ids).clone();
    e.backward(dy);
    const std::vector<float> g_cpu = host_values(e.weight().grad);
    move_parameters(e, kGpu);
    expect_close(e.forward(on(ids, kGpu)), y_cpu, 0.0, "Embedding forward (a gather: exact)");
    e.backward(on(dy, kGpu));
    EXPECT_LT(rel_max_diff(host_values(e.weight().grad), g_cpu), kLayerTol) << "Embedding grad";
    expect_buffers_on(e, kGpu, "Embedding");
  }
}

// ---- the tiny GPT ------------------------------------------------------------------------------
nn::GPTConfig tiny(bool tied, bool checkpointed) {
  nn::GPTConfig c;
  c.n_layer = 2;
  c.n_embd = 32;
  c.n_head = 4;  // head dim 8: the smallest cuDNN's flash attention takes
  c.seq_len = 16;
  c.vocab_size = 64;
  c.tie_weights = tied;
  c.checkpoint_activations = checkpointed;
  return c;
}

// Loss within 5e-3 relative, each parameter's gradient within 3e-2 of its largest value: q, k, v,
// the attention output and its gradient are rounded to bf16 (2^-9 relative each) on the GPU.
constexpr double kLossTol = 5e-3;
constexpr double kGptGradTol = 3e-2;

void compare_gpt(bool tied, bool checkpointed) {
  const std::string what = std::string(tied ? "tied" : "untied") +
                           (checkpointed ? ", checkpointed" : "");
  nn::GPT m(tiny(tied, checkpointed));
  m.init_weights(42);
  std::mt19937_64 rng(5);
  // Two batch shapes with the same B*T: the cached position ids must be rebuilt for the second.
  for (auto [B, T] : std::vector<std::pair<int64_t, int64_t>>{{4, 16}, {8, 8}}) {
    const std::string shape = what + ", B " + std::to_string(B) + " T " + std::to_string(T);
    const Tensor ids = ids_host({B, T}, 64, rng), tgt = ids_host({B, T}, 64, rng);
    move_parameters(m, Device::cpu());
    const float loss_cpu = m.forward(ids, tgt);
    m.backward(0.5f);
    const auto g_cpu = grads_of(m);

    move_parameters(m, kGpu);  // the same object: its host buffers must follow it up
    const float loss = m.forward(on(ids, kGpu), on(tgt, kGpu));
    m.backward(0.5f);
    EXPECT_NEAR(loss, loss_cpu, kLossTol * std::abs(loss_cpu)) << shape;
    EXPECT_TRUE(m.logits().device().is_cuda()) << shape << ": logits " << m.logits().str();
    for (const auto& [name, g] : grads_of(m)) {
      const double d = rel_max_diff(g, g_cpu.at(name));
      EXPECT_LT(d, kGptGradTol) << shape << ": gradient of " << name << " differs by " << d
                                << " of its largest value";
    }
    expect_buffers_on(m, kGpu, shape);
  }
}

TEST(CudaNN, GptLossAndGradientsMatchTheCpuTied) {
  ZT_REQUIRE_GPU();
  compare_gpt(true, false);
}

TEST(CudaNN, GptLossAndGradientsMatchTheCpuUntied) {
  ZT_REQUIRE_GPU();
  compare_gpt(false, false);
}

TEST(CudaNN, GptLossAndGradientsMatchTheCpuCheckpointed) {
  ZT_REQUIRE_GPU();
  compare_gpt(true, true);
}

// init_weights on parameters that already live on the GPU draws the same numbers as on the CPU.
TEST(CudaNN, InitWeightsOnTheGpuMatchesTheCpu) {
  ZT_REQUIRE_GPU();
  nn::GPT cpu(tiny(false, false)), gpu(tiny(false, false));
  move_parameters(gpu, kGpu);
  cpu.init_weights(7);
  gpu.init_weights(7);
  const auto pc = cpu.parameters(), pg = gpu.parameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.size(); ++i)
    EXPECT_EQ(host_values(pg[i]->value), host_values(pc[i]->value)) << pc[i]->name;
}

}  // namespace
}  // namespace zt
