// tests/zero/test_engine.cpp: the stage-0 Engine on one rank: flat buffers, DeepSpeed's
// accumulation semantics, clipping, bitwise reproducibility, and a model that really learns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/ops.h"
#include "io/data.h"
#include "tests/zero/engine_test_util.h"
#include "zero/engine.h"

using namespace zt;

namespace {

zero::EngineSettings settings(int64_t micro, int64_t gas, double clip = 0.0) {
  zero::EngineSettings s;
  s.micro_batch = micro;
  s.gradient_accumulation_steps = gas;
  s.gradient_clipping = clip;
  s.adam.weight_decay = 0.1f;
  s.scheduler = optim::make_constant_lr(1e-2);
  return s;
}

// The first `b` rows of a batch tensor as its own tensor.
Tensor rows(const Tensor& t, int64_t lo, int64_t n) {
  Tensor r = Tensor::empty({n, t.size(1)}, DType::i32);
  std::memcpy(r.raw(), t.data<int32_t>() + lo * t.size(1), r.nbytes());
  return r;
}

}  // namespace

TEST(Engine, ParametersAreViewsIntoOneFlatBuffer) {
  nn::GPT m(test::small_gpt());
  m.init_weights(1);
  std::vector<float> before;
  for (auto* p : m.parameters()) {
    auto v = p->value.to_vector();
    before.insert(before.end(), v.begin(), v.end());
  }
  zero::Engine e(m, settings(2, 1));
  EXPECT_EQ(e.num_parameters(), m.num_parameters());
  int64_t off = 0;
  for (auto* p : m.parameters()) {
    EXPECT_TRUE(p->value.shares_storage(e.flat_params())) << p->name;
    EXPECT_TRUE(p->grad.shares_storage(e.flat_grads())) << p->name;
    EXPECT_EQ(p->value.offset(), off) << p->name;
    off += p->value.numel();
  }
  EXPECT_EQ(e.flat_params().to_vector(), before);  // values copied in, canonical order
}

TEST(Engine, AccumulationWindowEqualsOneBigBatch) {
  // DeepSpeed divides the loss by gradient_accumulation_steps: 2 micro-batches of 4 with gas 2
  // must update exactly like 1 micro-batch of 8.
  io::TokenStream d = test::pattern_data();
  io::WindowSampler s(d, 8, 16, 5);
  Tensor ids, tgt;
  nn::GPT a(test::small_gpt()), b(test::small_gpt());
  a.init_weights(3);
  b.init_weights(3);
  zero::Engine ea(a, settings(8, 1)), eb(b, settings(4, 2));
  for (int step = 0; step < 3; ++step) {
    s.next(ids, tgt);
    ea.forward(ids, tgt);
    ea.backward();
    EXPECT_TRUE(ea.step());
    for (int m = 0; m < 2; ++m) {
      eb.forward(rows(ids, 4 * m, 4), rows(tgt, 4 * m, 4));
      eb.backward();
      EXPECT_EQ(eb.step(), m == 1);  // only the last micro-step of the window updates
    }
  }
  EXPECT_EQ(ea.global_step(), 3);
  EXPECT_EQ(eb.global_step(), 3);
  EXPECT_EQ(eb.micro_step(), 6);
  EXPECT_NEAR(ea.grad_norm(), eb.grad_norm(), 1e-5 * ea.grad_norm());
  auto pa = ea.flat_params().to_vector(), pb = eb.flat_params().to_vector();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    diff += (pa[i] - pb[i]) * (pa[i] - pb[i]);
    norm += pa[i] * pa[i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-5);
}

TEST(Engine, ClippingBoundsTheUpdateAndReportsTheRawNorm) {
  io::TokenStream d = test::pattern_data();
  io::WindowSampler s(d, 4, 16, 5);
  Tensor ids, tgt;
  s.next(ids, tgt);
  nn::GPT a(test::small_gpt()), b(test::small_gpt());
  a.init_weights(3);
  b.init_weights(3);
  zero::Engine ea(a, settings(4, 1, 0.0)), eb(b, settings(4, 1, 1e-3));
  ea.forward(ids, tgt);
  ea.backward();
  double raw = std::sqrt(ops::sum_squares(ea.flat_grads()));
  eb.forward(ids, tgt);
  eb.backward();
  Tensor g = eb.flat_grads().clone();
  ea.step();
  eb.step();
  EXPECT_NEAR(ea.grad_norm(), raw, 1e-6 * raw);
  EXPECT_NEAR(eb.grad_norm(), raw, 1e-6 * raw);  // reported before clipping
  EXPECT_GT(raw, 1e-3);
  // Adam normalizes the first step's size, so compare the moments instead: m = (1-b1) * g_clipped.
  auto* st = eb.optimizer().state()[0].second;
  double coef = 1e-3 / (raw + 1e-6);
  auto gv = g.to_vector();
  for (size_t i = 0; i < gv.size(); i += 97)
    EXPECT_NEAR((*st)[i], 0.1 * gv[i] * coef, 1e-9 + 1e-5 * std::abs(0.1 * gv[i] * coef));
}

TEST(Engine, BitwiseReproducible) {
  io::TokenStream d = test::pattern_data();
  std::vector<std::vector<float>> finals;
  std::vector<std::vector<float>> losses(2);
  for (int run = 0; run < 2; ++run) {
    nn::GPT m(test::small_gpt());
    m.init_weights(11);
    zero::Engine e(m, settings(4, 2, 1.0));
    io::WindowSampler s(d, 4, 16, 21);
    Tensor ids, tgt;
    for (int i = 0; i < 10; ++i) {
      s.next(ids, tgt);
      losses[run].push_back(e.forward(ids, tgt));
      e.backward();
      e.step();
    }
    finals.push_back(e.flat_params().to_vector());
  }
  EXPECT_EQ(losses[0], losses[1]);
  ASSERT_EQ(finals[0].size(), finals[1].size());
  EXPECT_EQ(std::memcmp(finals[0].data(), finals[1].data(), finals[0].size() * 4), 0);
}

TEST(Engine, RejectsStagesThatDoNotExist) {
  nn::GPT m(test::small_gpt());
  auto s = settings(2, 1);
  s.zero_stage = 4;
  try {
    zero::Engine e(m, s);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ZeRO stage 4 does not exist"), std::string::npos)
        << e.what();
  }
}

TEST(Engine, TinyModelLearnsTheRepositoryText) {
  // The tiny default model on this repository's own text: the evaluation loss must fall well below
  // the byte-unigram entropy of the corpus (3.6 nats; uniform is ln 256 = 5.55) within 300 steps.
  // (The corpus grows with the repository, hence the margin: 2.71 measured at the time of writing.)
  io::Split data = io::split_tokens(io::load_text_tree(ZT_SOURCE_DIR), 0.05);
  nn::GPTConfig c;  // tiny: 4 layers, 128 wide, 4 heads, T 128, vocab 256
  nn::GPT m(c);
  m.init_weights(1234);
  zero::EngineSettings s = settings(8, 1, 1.0);
  s.adam.beta2 = 0.95f;
  optim::WarmupParams w{0.0, 3e-3, 30, optim::WarmupType::linear};
  s.scheduler = optim::make_warmup_decay_lr(w, 300);
  zero::Engine e(m, s);
  io::WindowSampler train(data.train, 8, 128, 1234), val(data.val, 8, 128, 99);
  Tensor ids, tgt;
  auto eval = [&] {
    val.set_position(0);
    double sum = 0;
    for (int i = 0; i < 4; ++i) {
      val.next(ids, tgt);
      sum += m.forward(ids, tgt);
    }
    return sum / 4;
  };
  double first = eval();
  for (int i = 0; i < 300; ++i) {
    train.next(ids, tgt);
    e.forward(ids, tgt);
    e.backward();
    e.step();
  }
  double last = eval();
  // A fresh model is nearly uniform over bytes (its logits are small, not zero: the first loss
  // moves a little with the repository's text, which is the data).
  EXPECT_NEAR(first, std::log(256.0), 0.2);
  EXPECT_LT(last, 3.0) << "eval loss went from " << first << " to " << last;
}
