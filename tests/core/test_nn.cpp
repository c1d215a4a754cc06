// tests/core/test_nn.cpp: the layers of core/nn (Linear, LayerNorm, GELU, MLP, CausalSelfAttention,
// Block, GPT) against the double-precision reference of tests/core/reference.h, and what the ZeRO
// engine relies on: parameter names and order, Parameter::rebind into flat buffers, GPT-2 init,
// block hooks and gradient accumulation.
//
// Gradient checks: every parameter gradient and the input gradient of each layer (the GPT has
// integer inputs: parameters only) against central differences (eps 1e-6) of the *double*
// reference forward, built from the layer's own f32 parameter values. Parameters are randomized to
// O(1) values first (GPT-2's 0.02 init would make every layer nearly linear and hide mistakes).
// Tolerances (max-norm relative error, see reference.h): forward 1e-5 for single layers and 1e-4
// for the GPT's logits and loss; gradients 1e-4 for single layers, 2e-4 through the whole GPT.
#include "core/error.h"
#include "core/nn/attention.h"
#include "core/nn/gpt.h"
#include "core/nn/layers.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "tests/core/reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace zt {
namespace {

using namespace zt::test;
using nn::GPT;
using nn::GPTConfig;
using nn::Module;
using nn::Parameter;

constexpr double kFwdTol = 1e-5;
constexpr double kGradTol = 1e-4;
constexpr double kGptFwdTol = 1e-4;
constexpr double kGptGradTol = 2e-4;

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

// O(1) random parameters: LayerNorm weights around 1, everything else in [-scale, scale].
void randomize(Module& m, std::mt19937_64& rng, float scale = 0.5f) {
  std::uniform_real_distribution<float> u(-scale, scale), w(0.7f, 1.3f);
  for (Parameter* p : m.parameters()) {
    bool ln_weight = p->value.dim() == 1 && ends_with(p->name, "weight");
    float* v = p->value.data<float>();
    for (int64_t i = 0; i < p->value.numel(); ++i) v[i] = ln_weight ? w(rng) : u(rng);
  }
}

RefParams ref_params(Module& m) {
  RefParams P;
  for (Parameter* p : m.parameters()) P.p[p->name] = to_double(p->value);
  return P;
}

// ---- single layers
// --------------------------------------------------------------------------------
struct LayerCase {
  std::string what;
  Module* m;
  Tensor x;
  std::function<Tensor(const Tensor&)> forward;
  std::function<Tensor(const Tensor&)> backward;  // returns dx
  std::function<Vec(const RefParams&, const Vec&)> ref;
};

void check_layer(const LayerCase& c, uint64_t seed) {
  SCOPED_TRACE(c.what);
  std::mt19937_64 rng(seed);
  RefParams P = ref_params(*c.m);
  Vec X = to_double(c.x);
  c.m->zero_grad();
  Tensor y = c.forward(c.x);
  Vec Y = c.ref(P, X);
  EXPECT_TRUE(close(y, Y, kFwdTol, c.what + " forward"));
  Tensor D = random_tensor(y.shape(), rng);
  Vec Dd = to_double(D);
  Tensor dx = c.backward(D);
  // Same elements as x (CausalSelfAttention documents [B, T, C] but returns rows: [B*T, C]).
  EXPECT_EQ(dx.numel(), c.x.numel());
  auto loss = [&] { return dot(c.ref(P, X), Dd); };
  EXPECT_TRUE(close(dx, fd_grad(X, loss), kGradTol, c.what + " dx"));
  for (Parameter* p : c.m->parameters()) {
    Vec& v = P.p[p->name];
    EXPECT_EQ(p->grad.shape(), p->value.shape()) << p->name;
    EXPECT_TRUE(close(p->grad, fd_grad(v, loss), kGradTol, c.what + " d" + p->name));
  }
}

TEST(CoreNN, Linear) {
  std::mt19937_64 rng(1);
  for (bool bias : {true, false}) {
    nn::Linear lin(5, 7, bias);
    EXPECT_EQ(lin.in_features(), 5);
    EXPECT_EQ(lin.out_features(), 7);
    EXPECT_EQ(lin.weight().value.shape(), (Shape{7, 5}));  // PyTorch's [out, in]
    EXPECT_EQ(lin.bias() != nullptr, bias);
    EXPECT_EQ(lin.parameters().size(), bias ? 2u : 1u);
    randomize(lin, rng);
    for (Shape xs : {Shape{9, 5}, Shape{3, 3, 5}, Shape{1, 5}}) {
      Tensor x = random_tensor(xs, rng);
      int64_t rows = x.numel() / 5;
      check_layer({detail::str_cat("Linear(5, 7, bias ", bias, ") on ", shape_str(xs)), &lin, x,
                   [&](const Tensor& t) { return lin.forward(t); },
                   [&](const Tensor& d) { return lin.backward(d); },
                   [&](const RefParams& P, const Vec& X) {
                     return ref_linear(X, P.at("weight"), bias ? P.at("bias") : Vec{}, rows, 5, 7);
                   }},
                  2);
      Shape ys = xs;
      ys.back() = 7;
      EXPECT_EQ(lin.forward(x).shape(), ys);
    }
  }
  nn::Linear lin(5, 7);
  EXPECT_THROW(lin.forward(Tensor::zeros({4, 6})), Error);
}

TEST(CoreNN, LayerNorm) {
  std::mt19937_64 rng(3);
  nn::LayerNorm ln(6);
  // Fresh LayerNorm: weight 1, bias 0.
  std::vector<Parameter*> ps = ln.parameters();
  ASSERT_EQ(ps.size(), 2u);
  EXPECT_EQ(ps[0]->name, "weight");
  EXPECT_EQ(ps[1]->name, "bias");
  for (float v : ps[0]->value.to_vector()) EXPECT_EQ(v, 1.f);
  for (float v : ps[1]->value.to_vector()) EXPECT_EQ(v, 0.f);
  randomize(ln, rng);
  Tensor x = random_tensor({7, 6}, rng, -2.f, 2.f);
  check_layer({"LayerNorm(6)", &ln, x, [&](const Tensor& t) { return ln.forward(t); },
               [&](const Tensor& d) { return ln.backward(d); },
               [&](const RefParams& P, const Vec& X) {
                 return ref_layernorm(X, P.at("weight"), P.at("bias"), 7, 6);
               }},
              4);
}

TEST(CoreNN, Gelu) {
  std::mt19937_64 rng(5);
  nn::GELU g;
  EXPECT_TRUE(g.parameters().empty());
  Tensor x = random_tensor({4, 5}, rng, -4.f, 4.f);
  check_layer({"GELU", &g, x, [&](const Tensor& t) { return g.forward(t); },
               [&](const Tensor& d) { return g.backward(d); },
               [&](const RefParams&, const Vec& X) { return ref_gelu(X); }},
              6);
}

TEST(CoreNN, MLP) {
  std::mt19937_64 rng(7);
  nn::MLP mlp(4, 16);
  std::vector<std::string> names;
  for (Parameter* p : mlp.parameters()) names.push_back(p->name);
  EXPECT_EQ(names, (std::vector<std::string>{"fc.weight", "fc.bias", "proj.weight", "proj.bias"}));
  randomize(mlp, rng);
  Tensor x = random_tensor({6, 4}, rng);
  check_layer({"MLP(4, 16)", &mlp, x, [&](const Tensor& t) { return mlp.forward(t); },
               [&](const Tensor& d) { return mlp.backward(d); },
               [&](const RefParams& P, const Vec& X) { return ref_mlp(P, "", X, 6, 4); }},
              8);
}

TEST(CoreNN, CausalSelfAttention) {
  std::mt19937_64 rng(9);
  const int64_t B = 2, T = 5, C = 6;
  const int H = 2;
  nn::CausalSelfAttention att(C, H);
  std::vector<std::string> names;
  for (Parameter* p : att.parameters()) names.push_back(p->name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}));
  EXPECT_EQ(att.qkv().weight().value.shape(), (Shape{3 * C, C}));
  randomize(att, rng);
  for (Shape xs : {Shape{B, T, C}, Shape{B * T, C}}) {
    Tensor x = random_tensor(xs, rng);
    check_layer({detail::str_cat("CausalSelfAttention(6, 2) on ", shape_str(xs)), &att, x,
                 [&](const Tensor& t) { return att.forward(t, B, T); },
                 [&](const Tensor& d) { return att.backward(d); },
                 [&](const RefParams& P, const Vec& X) {
                   return ref_attention_layer(P, "", X, B, T, C, H);
                 }},
                10);
  }
  EXPECT_THROW(nn::CausalSelfAttention(6, 4), Error);
  EXPECT_THROW(att.forward(Tensor::zeros({2, 4, 6}), 2, 5), Error);
}

TEST(CoreNN, Block) {
  std::mt19937_64 rng(11);
  const int64_t B = 2, T = 5, C = 8;
  const int H = 2;
  nn::Block blk(C, H);
  std::vector<std::string> names;
  for (Parameter* p : blk.parameters()) names.push_back(p->name);
  EXPECT_EQ(names, (std::vector<std::string>{"ln1.weight", "ln1.bias", "attn.qkv.weight",
                                             "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                             "ln2.weight", "ln2.bias", "mlp.fc.weight",
                                             "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"}));
  EXPECT_EQ(blk.mlp().fc().weight().value.shape(), (Shape{4 * C, C}));  // GPT-2: hidden 4C
  randomize(blk, rng);
  Tensor x = random_tensor({B * T, C}, rng);
  check_layer({"Block(8, 2)", &blk, x, [&](const Tensor& t) { return blk.forward(t, B, T); },
               [&](const Tensor& d) { return blk.backward(d); },
               [&](const RefParams& P, const Vec& X) { return ref_block(P, "", X, B, T, C, H); }},
              12);
}

TEST(CoreNN, Embedding) {
  std::mt19937_64 rng(29);
  nn::Embedding emb(6, 4);
  EXPECT_EQ(emb.weight().value.shape(), (Shape{6, 4}));
  randomize(emb, rng);
  std::vector<int32_t> ids = {5, 0, 3, 3, 5, 5, 1};  // repeats accumulate
  Tensor tids = ids_tensor(ids, {7});
  Vec W = to_double(emb.weight().value);
  Tensor y = emb.forward(tids);
  EXPECT_TRUE(close(y, ref_embedding(ids, W, 4), 0, "Embedding forward"));
  Tensor D = random_tensor({7, 4}, rng);
  Vec Dd = to_double(D);
  Tensor g0 = random_tensor({6, 4}, rng);
  ops::copy(g0, emb.weight().grad);  // gradients accumulate onto what is there
  emb.backward(D);
  Vec want = fd_grad(W, [&] { return dot(ref_embedding(ids, W, 4), Dd); });
  Vec g0d = to_double(g0);
  for (size_t i = 0; i < want.size(); ++i) want[i] += g0d[i];
  EXPECT_TRUE(close(emb.weight().grad, want, kGradTol, "Embedding dweight (+=)"));
}

// ---- the GPT
// --------------------------------------------------------------------------------------
GPTConfig tiny_config(bool tied, int seq_len = 5) {
  GPTConfig c;
  c.n_layer = 2;
  c.n_embd = 8;
  c.n_head = 2;
  c.seq_len = seq_len;
  c.vocab_size = 11;
  c.tie_weights = tied;
  return c;
}

RefGPTConfig ref_config(const GPTConfig& c) {
  return {c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.tie_weights};
}

struct Batch {
  Tensor ids, targets;
  std::vector<int32_t> id, tg;
};

// Random ids; random targets with about one in six ignored (-1), never all.
Batch make_batch(int64_t B, int64_t T, int V, std::mt19937_64& rng) {
  Batch b;
  b.id.resize(B * T);
  b.tg.resize(B * T);
  for (auto& i : b.id) i = static_cast<int32_t>(rng() % V);
  for (auto& t : b.tg) t = rng() % 6 == 0 ? -1 : static_cast<int32_t>(rng() % V);
  b.tg[0] = 1;
  b.ids = ids_tensor(b.id, {B, T});
  b.targets = ids_tensor(b.tg, {B, T});
  return b;
}

std::vector<std::string> expected_names(const GPTConfig& c) {
  std::vector<std::string> n = {"wte.weight", "wpe.weight"};
  for (int l = 0; l < c.n_layer; ++l)
    for (const char* s : {"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
                          "attn.proj.weight", "attn.proj.bias", "ln2.weight", "ln2.bias",
                          "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias"})
      n.push_back(detail::str_cat("blocks.", l, ".", s));
  n.push_back("ln_f.weight");
  n.push_back("ln_f.bias");
  if (!c.tie_weights) n.push_back("lm_head.weight");
  return n;
}

// Loss, logits and every parameter gradient of `m` (after its forward and backward on `b`) against
// the double reference built from its current parameter values.
void check_gpt_against_reference(GPT& m, const Batch& b, float loss, const std::string& what,
                                 float dloss = 1.f) {
  SCOPED_TRACE(what);
  const int64_t B = b.ids.size(0), T = b.ids.size(1);
  RefParams P = ref_params(m);
  RefGPTConfig rc = ref_config(m.config());
  double want = ref_gpt_loss(P, rc, b.id, b.tg, B, T);
  EXPECT_NEAR(loss, want, kGptFwdTol * std::fabs(want)) << "loss";
  EXPECT_TRUE(close(m.logits(), ref_gpt_logits(P, rc, b.id, B, T), kGptFwdTol, "logits"));
  auto L = [&] { return dloss * ref_gpt_loss(P, rc, b.id, b.tg, B, T); };
  for (Parameter* p : m.parameters())
    EXPECT_TRUE(close(p->grad, fd_grad(P.p[p->name], L), kGptGradTol, "d" + p->name));
}

TEST(CoreNN, GptNamesShapesAndCount) {
  for (bool tied : {true, false}) {
    GPTConfig c = tiny_config(tied);
    GPT m(c);
    std::vector<std::string> names;
    int64_t total = 0;
    for (Parameter* p : m.parameters()) {
      names.push_back(p->name);
      total += p->value.numel();
      EXPECT_EQ(p->grad.shape(), p->value.shape()) << p->name;
      EXPECT_FALSE(p->grad.shares_storage(p->value)) << p->name;
      // Weight decay on matrices, not on biases or LayerNorm parameters.
      if (p->value.dim() == 1) {
        EXPECT_FALSE(p->decay) << p->name;
      }
      if (ends_with(p->name, "proj.weight") || ends_with(p->name, "qkv.weight") ||
          ends_with(p->name, "fc.weight") || p->name == "lm_head.weight") {
        EXPECT_TRUE(p->decay) << p->name;
      }
    }
    EXPECT_EQ(names, expected_names(c)) << "tied " << tied;
    EXPECT_EQ(m.num_parameters(), total);
    const int64_t C = c.n_embd, V = c.vocab_size, S = c.seq_len, L = c.n_layer;
    int64_t per_block =
        2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) + (4 * C * C + C);
    EXPECT_EQ(total, V * C + S * C + L * per_block + 2 * C + (tied ? 0 : V * C));
    std::map<std::string, Shape> shapes;
    for (Parameter* p : m.parameters()) shapes[p->name] = p->value.shape();
    EXPECT_EQ(shapes["wte.weight"], (Shape{V, C}));
    EXPECT_EQ(shapes["wpe.weight"], (Shape{S, C}));
    EXPECT_EQ(shapes["blocks.1.attn.qkv.weight"], (Shape{3 * C, C}));
    EXPECT_EQ(shapes["blocks.1.mlp.proj.weight"], (Shape{C, 4 * C}));
    if (!tied) {
      EXPECT_EQ(shapes["lm_head.weight"], (Shape{V, C}));
    }
    EXPECT_EQ(m.num_units(), L + 2);
  }
}

TEST(CoreNN, GptGradientsTiedAndUntied) {
  std::mt19937_64 rng(13);
  for (bool tied : {true, false})
    for (int64_t T : {5, 3, 1}) {  // the full position table, shorter sequences
      GPT m(tiny_config(tied));
      randomize(m, rng);
      Batch b = make_batch(2, T, 11, rng);
      float loss = m.forward(b.ids, b.targets);
      m.backward();
      check_gpt_against_reference(m, b, loss, detail::str_cat("tied ", tied, " T ", T));
    }
}

TEST(CoreNN, GptBackwardScalesWithDloss) {
  std::mt19937_64 rng(15);
  GPT m(tiny_config(false));
  randomize(m, rng);
  Batch b = make_batch(2, 5, 11, rng);
  float loss = m.forward(b.ids, b.targets);
  m.backward(0.25f);
  check_gpt_against_reference(m, b, loss, "dloss 0.25", 0.25f);
}

TEST(CoreNN, GptShapeChangesBetweenCalls) {
  // A model is reused across batch shapes (evaluation, a last partial batch): each call must be
  // right on its own, whatever the previous call's shape was.
  std::mt19937_64 rng(17);
  GPT m(tiny_config(true, 8));
  randomize(m, rng);
  for (auto [B, T] :
       std::vector<std::pair<int64_t, int64_t>>{{2, 4}, {1, 8}, {4, 2}, {2, 8}, {2, 4}}) {
    Batch b = make_batch(B, T, 11, rng);
    m.zero_grad();
    float loss = m.forward(b.ids, b.targets);
    m.backward();
    check_gpt_against_reference(m, b, loss, detail::str_cat("B ", B, " T ", T));
  }
}

TEST(CoreNN, GptInputErrors) {
  GPT m(tiny_config(true));
  std::mt19937_64 rng(19);
  Batch ok = make_batch(2, 5, 11, rng);
  Batch too_long = make_batch(1, 6, 11, rng);
  EXPECT_THROW(m.forward(too_long.ids, too_long.targets), Error);  // T > seq_len
  Tensor bad_ids = ids_tensor({0, 1, 11, 2, 3}, {1, 5});           // id == vocab
  EXPECT_THROW(m.forward(bad_ids, ids_tensor({0, 0, 0, 0, 0}, {1, 5})), Error);
  EXPECT_THROW(m.forward(ok.ids, ids_tensor({0, 1, 2, 3, 4}, {1, 5})), Error);  // shape mismatch
  EXPECT_THROW(m.forward(Tensor::zeros({2, 5}), ok.targets), Error);            // f32 ids
  GPT fresh(tiny_config(true));
  EXPECT_THROW(fresh.backward(), Error);  // backward before any forward
  GPTConfig bad = tiny_config(true);
  bad.n_head = 3;
  EXPECT_THROW(GPT{bad}, Error);
}

// ---- rebind into flat buffers
// ------------------------------------------------------------------------
TEST(CoreNN, RebindIntoFlatBuffers) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(detail::str_cat("tied ", tied));
    std::mt19937_64 rng(21);
    GPT m(tiny_config(tied));
    randomize(m, rng);
    Batch b = make_batch(2, 5, 11, rng);
    // A step before rebinding, so that every layer has its buffers and saved state from before.
    m.forward(b.ids, b.targets);
    m.backward();

    std::vector<Parameter*> ps = m.parameters();
    int64_t total = m.num_parameters();
    Tensor flat_v = Tensor::zeros({total + 3}), flat_g = Tensor::zeros({total + 3});
    std::vector<std::vector<float>> before;
    int64_t off = 1;  // not at the buffer start: offsets must be honoured
    for (Parameter* p : ps) {
      before.push_back(p->value.to_vector());
      int64_t n = p->value.numel();
      p->rebind(flat_v.flat_view(off, {n}), flat_g.flat_view(off, {n}));
      EXPECT_EQ(p->value.shape(), p->grad.shape());
      EXPECT_TRUE(p->value.shares_storage(flat_v)) << p->name;
      EXPECT_TRUE(p->grad.shares_storage(flat_g)) << p->name;
      EXPECT_EQ(p->value.offset(), off);
      EXPECT_EQ(p->value.to_vector(), before.back()) << "value not copied in: " << p->name;
      off += n;
    }
    // New values written straight into the flat buffer (as an optimizer step or a stage-3 gather
    // would); the model must compute with them and put gradients in the flat gradient buffer.
    float* fv = flat_v.data<float>();
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    off = 1;
    for (Parameter* p : ps) {
      bool ln_weight = p->value.dim() == 1 && ends_with(p->name, "weight");
      for (int64_t i = 0; i < p->value.numel(); ++i)
        fv[off + i] = ln_weight ? 1.f + u(rng) : u(rng);
      off += p->value.numel();
    }
    ops::fill(flat_g, 0.f);
    float loss = m.forward(b.ids, b.targets);
    m.backward();
    check_gpt_against_reference(m, b, loss, "after rebind");
    // The gradients are in the flat buffer (compare through it, not through p->grad).
    std::vector<float> g = flat_g.to_vector();
    EXPECT_EQ(g[0], 0.f);
    EXPECT_EQ(g[total + 1], 0.f);
    EXPECT_EQ(g[total + 2], 0.f);
    off = 1;
    for (Parameter* p : ps) {
      std::vector<float> pg = p->grad.to_vector();
      EXPECT_TRUE(std::equal(pg.begin(), pg.end(), g.begin() + off)) << p->name;
      off += p->value.numel();
    }
    double norm = ops::sum_squares(flat_g);
    EXPECT_GT(norm, 0.0);
  }
}

TEST(CoreNN, RebindWithoutCopyAndShapeErrors) {
  nn::Linear lin(3, 2);
  Parameter& w = lin.weight();
  ops::fill(w.value, 5.f);
  Tensor nv = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {6}), ng = Tensor::zeros({6});
  w.rebind(nv, ng, /*copy_value=*/false);
  EXPECT_EQ(w.value.shape(), (Shape{2, 3}));
  EXPECT_EQ(w.value.to_vector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  try {
    w.rebind(Tensor::zeros({5}), Tensor::zeros({6}));
    ADD_FAILURE() << "rebind with a wrong size did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("weight"), std::string::npos) << e.what();
  }
  EXPECT_THROW(w.rebind(Tensor::zeros({6}), Tensor::zeros({7})), Error);
}

// ---- buffers follow the tensors they are computed from (ensure_like) ---------------------------
TEST(CoreNN, EnsureLikeReallocatesOnlyWhenShapeDtypeOrDeviceChange) {
  const Tensor f32 = Tensor::zeros({3, 4}), bf16 = Tensor::zeros({2}, DType::bf16);
  Tensor t;
  nn::ensure_like(t, {5, 2}, f32);
  EXPECT_EQ(t.shape(), (Shape{5, 2}));
  EXPECT_EQ(t.dtype(), DType::f32);
  EXPECT_TRUE(t.device().is_cpu());
  const void* first = t.raw();
  nn::ensure_like(t, {5, 2}, f32);  // steady state: the same storage
  EXPECT_EQ(t.raw(), first);
  nn::ensure_like(t, {5, 2}, bf16);  // follows the dtype of `like`
  EXPECT_EQ(t.dtype(), DType::bf16);
  nn::ensure_like(t, {5, 2}, DType::f32, bf16);  // or the one asked for (LayerNorm's statistics)
  EXPECT_EQ(t.dtype(), DType::f32);
  nn::ensure_like(t, {10}, f32);
  EXPECT_EQ(t.shape(), (Shape{10}));
  EXPECT_THROW(nn::ensure_like(t, {1}, Tensor()), Error);
}

TEST(CoreNN, ActivationsFollowTheParameters) {
  // After a forward and backward on the CPU every buffer a layer kept is a host tensor in the
  // parameters' dtype (the GPU side of this: tests/gpu/test_cuda_nn.cpp).
  std::mt19937_64 rng(23);
  for (bool ckpt : {false, true}) {
    GPTConfig c = tiny_config(true);
    c.checkpoint_activations = ckpt;
    GPT m(c);
    randomize(m, rng);
    Batch b = make_batch(2, 5, 11, rng);
    m.forward(b.ids, b.targets);
    m.backward();
    for (Tensor* t : m.activation_buffers()) {
      if (t->defined()) {
        // Saved ids (the embeddings') stay i32; everything else is f32 like the parameters.
        EXPECT_TRUE(t->device().is_cpu() && (t->dtype() == DType::f32 || t->dtype() == DType::i32))
            << t->str();
      }
    }
  }
}

// ---- init
// ------------------------------------------------------------------------------------------
TEST(CoreNN, InitWeightsIntoParametersOfAnotherDtype) {
  // Weights not held as host f32 (a GPU, a 16-bit copy) get the host's f32 draws copied in: the
  // same numbers, rounded once.
  GPTConfig c = tiny_config(false);
  GPT a(c), b(c);
  for (Parameter* p : b.parameters())
    p->rebind(Tensor::empty(p->shape, DType::bf16), Tensor::zeros(p->shape, DType::bf16), false);
  a.init_weights(11);
  b.init_weights(11);
  std::vector<Parameter*> pa = a.parameters(), pb = b.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(pb[i]->value.dtype(), DType::bf16);
    EXPECT_EQ(pb[i]->value.to_vector(), pa[i]->value.to(DType::bf16).to_vector()) << pa[i]->name;
  }
}

TEST(CoreNN, InitWeightsStatistics) {
  GPTConfig c;  // the `tiny` config: 4 layers, 128 wide, vocab 256, T 128
  c.tie_weights = false;
  GPT m(c);
  m.init_weights(1234);
  const double resid = 0.02 / std::sqrt(2.0 * c.n_layer);
  for (Parameter* p : m.parameters()) {
    std::vector<float> v = p->value.to_vector();
    double n = static_cast<double>(v.size()), mean = 0, sq = 0;
    for (float x : v) mean += x;
    mean /= n;
    for (float x : v) sq += (x - mean) * (x - mean);
    double sd = std::sqrt(sq / n);
    if (p->value.dim() == 1) {
      float want = ends_with(p->name, "ln1.weight") || ends_with(p->name, "ln2.weight") ||
                           p->name == "ln_f.weight"
                       ? 1.f
                       : 0.f;
      for (float x : v) ASSERT_EQ(x, want) << p->name;
      continue;
    }
    double want_sd = ends_with(p->name, "attn.proj.weight") || ends_with(p->name, "mlp.proj.weight")
                         ? resid
                         : 0.02;
    // Sample std of n normals: relative standard error 1/sqrt(2n) (<= 0.6% here); allow 5 sigma.
    double tol = 5 * want_sd / std::sqrt(2 * n);
    EXPECT_NEAR(sd, want_sd, tol) << p->name << " (" << v.size() << " values)";
    EXPECT_NEAR(mean, 0.0, 5 * want_sd / std::sqrt(n)) << p->name;
    // Normal, not uniform: about 4.55% of the values beyond 2 sd (uniform: 0%).
    double beyond = 0;
    for (float x : v) beyond += std::fabs(x - mean) > 2 * want_sd;
    EXPECT_NEAR(beyond / n, 0.0455, 0.02) << p->name;
  }
}

TEST(CoreNN, InitWeightsSeeded) {
  GPTConfig c = tiny_config(false);
  GPT a(c), b(c), d(c);
  a.init_weights(7);
  b.init_weights(7);
  d.init_weights(8);
  std::vector<Parameter*> pa = a.parameters(), pb = b.parameters(), pd = d.parameters();
  bool any_diff = false;
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_EQ(0, std::memcmp(pa[i]->value.raw(), pb[i]->value.raw(), pa[i]->value.nbytes()))
        << "same seed, different bits: " << pa[i]->name;
    if (pa[i]->value.dim() == 2)
      any_diff |= std::memcmp(pa[i]->value.raw(), pd[i]->value.raw(), pa[i]->value.nbytes()) != 0;
  }
  EXPECT_TRUE(any_diff) << "different seeds gave the same weights";
  for (size_t i = 0; i < pa.size(); ++i) {
    if (pa[i]->value.dim() == 2) {
      EXPECT_NE(0, std::memcmp(pa[i]->value.raw(), pd[i]->value.raw(), pa[i]->value.nbytes()))
          << pa[i]->name;
    }
  }
  // Two layers of one model do not get the same numbers.
  auto find = [&](const std::string& n) {
    for (Parameter* p : pa)
      if (p->name == n) return p;
    return static_cast<Parameter*>(nullptr);
  };
  Parameter* q0 = find("blocks.0.attn.qkv.weight");
  Parameter* q1 = find("blocks.1.attn.qkv.weight");
  ASSERT_TRUE(q0 && q1);
  EXPECT_NE(q0->value.to_vector(), q1->value.to_vector());
  // init_weights resets, whatever the weights were before.
  std::mt19937_64 rng(1);
  randomize(b, rng);
  b.init_weights(7);
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_EQ(0, std::memcmp(pa[i]->value.raw(), pb[i]->value.raw(), pa[i]->value.nbytes()));
}

// ---- hooks and units
// ---------------------------------------------------------------------------------
struct Recorder : nn::BlockHooks {
  GPT* m = nullptr;
  std::vector<std::string> events;
  std::map<Parameter*, std::vector<float>> grad_at_done;  // grads when after_backward said done
  void before_forward(int u) override { events.push_back(detail::str_cat("bf", u)); }
  void after_forward(int u) override { events.push_back(detail::str_cat("af", u)); }
  void before_backward(int u) override { events.push_back(detail::str_cat("bb", u)); }
  void after_backward(int u) override {
    events.push_back(detail::str_cat("ab", u));
    for (Parameter* p : m->unit_parameters(u)) grad_at_done[p] = p->grad.to_vector();
  }
};

TEST(CoreNN, HooksOrderAndGradientsCompleteAtAfterBackward) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(detail::str_cat("tied ", tied));
    std::mt19937_64 rng(23);
    GPT m(tiny_config(tied));
    randomize(m, rng);
    Batch b = make_batch(2, 5, 11, rng);
    Recorder rec;
    rec.m = &m;
    m.forward(b.ids, b.targets, &rec);
    const int U = m.num_units();
    std::vector<std::string> want;
    for (int u = 0; u < U; ++u) {
      want.push_back(detail::str_cat("bf", u));
      want.push_back(detail::str_cat("af", u));
    }
    EXPECT_EQ(rec.events, want);
    rec.events.clear();
    m.backward(1.f, &rec);
    want.clear();
    for (int u = U - 1; u >= 0; --u) {
      want.push_back(detail::str_cat("bb", u));
      want.push_back(detail::str_cat("ab", u));
    }
    EXPECT_EQ(rec.events, want);
    // A unit's gradients are final when its after_backward runs (the engine reduces them then).
    for (Parameter* p : m.parameters()) {
      ASSERT_TRUE(rec.grad_at_done.count(p)) << p->name << " is in no unit";
      EXPECT_EQ(rec.grad_at_done[p], p->grad.to_vector())
          << p->name << " changed after its unit's after_backward";
    }
  }
}

TEST(CoreNN, UnitsPartitionTheParametersInOrder) {
  for (bool tied : {true, false}) {
    GPT m(tiny_config(tied));
    std::vector<Parameter*> all = m.parameters();
    std::vector<Parameter*> cat;
    for (int u = 0; u < m.num_units(); ++u)
      for (Parameter* p : m.unit_parameters(u)) cat.push_back(p);
    // Every parameter in exactly one unit, in the model's canonical order (so a unit is a
    // contiguous range of the flat buffers).
    EXPECT_EQ(cat, all) << "tied " << tied;
    EXPECT_THROW(m.unit_parameters(-1), Error);
    EXPECT_THROW(m.unit_parameters(m.num_units()), Error);
  }
}

TEST(CoreNN, UnitParametersKeepFullNames) {
  // The engine names buckets, checkpoint shards and errors after parameters it got from
  // unit_parameters(); a parameter's name must not depend on which accessor was called last.
  GPT m(tiny_config(false));
  std::vector<std::string> full;
  for (Parameter* p : m.parameters()) full.push_back(p->name);
  std::vector<std::string> via_units;
  for (int u = 0; u < m.num_units(); ++u)
    for (Parameter* p : m.unit_parameters(u)) via_units.push_back(p->name);
  EXPECT_EQ(via_units, full);
  m.block(1).parameters();  // a child's own listing must not rename the model's parameters
  for (Parameter* p : m.unit_parameters(2))
    EXPECT_TRUE(p->name.rfind("blocks.1.", 0) == 0) << p->name;
}

// ---- gradient accumulation
// -----------------------------------------------------------------------------
std::vector<std::vector<float>> grads_of(GPT& m) {
  std::vector<std::vector<float>> g;
  for (Parameter* p : m.parameters()) g.push_back(p->grad.to_vector());
  return g;
}

TEST(CoreNN, GradientAccumulation) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(detail::str_cat("tied ", tied));
    std::mt19937_64 rng(25);
    GPT m(tiny_config(tied));
    randomize(m, rng);
    Batch b = make_batch(2, 5, 11, rng);
    m.zero_grad();
    m.forward(b.ids, b.targets);
    m.backward();
    auto g1 = grads_of(m);
    // Two backward calls of one forward: twice the gradient.
    m.backward();
    auto g2 = grads_of(m);
    // Forward + backward again on top: three times.
    m.forward(b.ids, b.targets);
    m.backward();
    auto g3 = grads_of(m);
    std::vector<Parameter*> ps = m.parameters();
    for (size_t i = 0; i < g1.size(); ++i) {
      Vec w2(g1[i].size()), w3(g1[i].size());
      for (size_t j = 0; j < g1[i].size(); ++j) {
        w2[j] = 2.0 * g1[i][j];
        w3[j] = 3.0 * g1[i][j];
      }
      EXPECT_TRUE(close(g2[i], w2, 1e-6, "2x " + ps[i]->name));
      EXPECT_TRUE(close(g3[i], w3, 1e-6, "3x " + ps[i]->name));
    }
    m.zero_grad();
    for (Parameter* p : m.parameters())
      for (float v : p->grad.to_vector()) ASSERT_EQ(v, 0.f) << p->name;
  }
}

TEST(CoreNN, ForwardIsDeterministic) {
  std::mt19937_64 rng(27);
  GPT m(tiny_config(true));
  m.init_weights(3);
  Batch b = make_batch(2, 5, 11, rng);
  float l1 = m.forward(b.ids, b.targets);
  m.backward();
  auto g1 = grads_of(m);
  m.zero_grad();
  float l2 = m.forward(b.ids, b.targets);
  m.backward();
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(g1, grads_of(m));
  // A freshly initialised GPT predicts about uniformly: loss ~ log(V).
  EXPECT_NEAR(l1, std::log(11.0), 0.1);
}

}  // namespace
}  // namespace zt
