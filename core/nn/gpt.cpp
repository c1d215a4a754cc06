// core/nn/gpt.cpp: the GPT model: blocks, forward/backward through units with hooks, GPT-2 init,
// activation checkpointing (segments, shared buffer sets, recompute; see gpt.h).
#include "core/nn/gpt.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/ops.h"

namespace zt::nn {

// ---- Block (pre-LayerNorm): h = x + attn(ln1(x)); out = h + mlp(ln2(h)) -------------------------
Block::Block(int64_t dim, int n_head) : ln1_(dim), attn_(dim, n_head), ln2_(dim), mlp_(dim, 4 * dim) {
  add_child("ln1", ln1_);
  add_child("attn", attn_);
  add_child("ln2", ln2_);
  add_child("mlp", mlp_);
  for (Tensor* t : {&h_, &out_, &dh_, &dx_}) add_activation_buffer(*t);
}

const Tensor& Block::forward(const Tensor& x, int64_t batch, int64_t seq) {
  ensure_like(h_, x.shape(), x);
  ensure_like(out_, x.shape(), x);
  ops::add(x, attn_.forward(ln1_.forward(x), batch, seq), h_);
  ops::add(h_, mlp_.forward(ln2_.forward(h_)), out_);
  return out_;
}

const Tensor& Block::backward(const Tensor& dout) {
  ensure_like(dh_, dout.shape(), dout);
  ensure_like(dx_, dout.shape(), dout);
  // The residual passes dout straight through; the branch adds its own gradient. dout may share
  // storage with dx_ (see gpt.h): its last read is here, before anything writes dx_.
  ops::add(dout, ln2_.backward(mlp_.backward(dout)), dh_);
  ops::add(dh_, ln1_.backward(attn_.backward(dh_)), dx_);
  return dx_;
}

// ---- GPT ----------------------------------------------------------------------------------------
GPT::GPT(const GPTConfig& cfg)
    : cfg_(cfg), wte_(cfg.vocab_size, cfg.n_embd), wpe_(cfg.seq_len, cfg.n_embd), ln_f_(cfg.n_embd) {
  ZT_CHECK(cfg.n_layer >= 1 && cfg.n_embd >= 1 && cfg.n_head >= 1 && cfg.seq_len >= 1 &&
               cfg.vocab_size >= 1,
           "GPT: every size must be positive (n_layer ", cfg.n_layer, ", n_embd ", cfg.n_embd,
           ", n_head ", cfg.n_head, ", seq_len ", cfg.seq_len, ", vocab_size ", cfg.vocab_size, ")");
  ZT_CHECK(cfg.n_embd % cfg.n_head == 0, "GPT: n_embd ", cfg.n_embd, " is not divisible by n_head ",
           cfg.n_head);
  add_child("wte", wte_);
  add_child("wpe", wpe_);
  for (int i = 0; i < cfg.n_layer; ++i) {
    blocks_.push_back(std::make_unique<Block>(cfg.n_embd, cfg.n_head));
    add_child("blocks." + std::to_string(i), *blocks_.back());
  }
  add_child("ln_f", ln_f_);
  if (!cfg.tie_weights) {
    lm_head_ = std::make_unique<Linear>(cfg.n_embd, cfg.vocab_size, false);
    add_child("lm_head", *lm_head_);
  }

  ZT_CHECK(cfg.number_checkpoints >= 0 && cfg.number_checkpoints <= cfg.n_layer,
           "GPT: number_checkpoints ", cfg.number_checkpoints, " must be in 0..n_layer (",
           cfg.n_layer, "; 0 means one checkpoint per block)");
  segment_of_.assign(cfg.n_layer, -1);
  shared_set_.assign(cfg.n_layer, -1);
  if (cfg.checkpoint_activations) {
    const int k = cfg.number_checkpoints > 0 ? cfg.number_checkpoints : cfg.n_layer;
    const int base = cfg.n_layer / k, extra = cfg.n_layer % k;
    int first = 0, longest = 0;
    for (int s = 0; s < k; ++s) {
      const int len = base + (s < extra ? 1 : 0);
      segments_.emplace_back(first, first + len);
      for (int i = first; i < first + len; ++i) {
        segment_of_[i] = s;
        shared_set_[i] = i - first;
      }
      first += len;
      longest = std::max(longest, len);
    }
    for (auto& b : blocks_) block_buffers_.push_back(b->activation_buffers());
    shared_.assign(longest, std::vector<Tensor>(block_buffers_[0].size()));
  }
}

void GPT::init_weights(uint64_t seed) {
  // GPT-2: N(0, 0.02) for matrices and embeddings, N(0, 0.02 / sqrt(2 L)) for the projections that
  // write into the residual stream (each block adds two), zero biases, LayerNorm (1, 0).
  std::mt19937_64 rng(seed);
  auto normal = [&rng]() {  // Box-Muller on 53-bit uniforms: same numbers on every platform
    constexpr double kTwoPi = 6.283185307179586;
    double u1 = (static_cast<double>(rng() >> 11) + 1.0) * 0x1.0p-53;
    double u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
  };
  const double residual_std = cfg_.init_std / std::sqrt(2.0 * cfg_.n_layer);
  auto ends_with = [](const std::string& s, const std::string& e) {
    return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
  };
  for (Parameter* p : parameters()) {
    // The numbers are drawn on the host in f32; weights elsewhere (a GPU, another dtype) get them
    // copied in, so every device starts from the same bits.
    const bool in_place = p->value.device().is_cpu() && p->value.dtype() == DType::f32;
    Tensor host = in_place ? p->value : Tensor::empty(p->value.shape());
    float* v = host.data<float>();
    int64_t n = host.numel();
    if (host.dim() == 1) {  // biases and LayerNorm
      bool ln_weight = ends_with(p->name, "ln1.weight") || ends_with(p->name, "ln2.weight") ||
                       ends_with(p->name, "ln_f.weight");
      std::fill(v, v + n, ln_weight ? 1.f : 0.f);
    } else {
      bool residual =
          ends_with(p->name, "attn.proj.weight") || ends_with(p->name, "mlp.proj.weight");
      double std = residual ? residual_std : cfg_.init_std;
      for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(std * normal());
    }
    if (!in_place) ops::copy(host, p->value);
  }
}

std::vector<Parameter*> GPT::unit_parameters(int unit) {
  ZT_CHECK(unit >= 0 && unit < num_units(), "GPT::unit_parameters: unit ", unit, " of ",
           num_units());
  if (unit == 0) {
    std::vector<Parameter*> p = wte_.parameters();
    for (Parameter* q : wpe_.parameters()) p.push_back(q);
    return p;
  }
  if (unit <= cfg_.n_layer) return blocks_[unit - 1]->parameters();
  std::vector<Parameter*> p = ln_f_.parameters();
  if (lm_head_) for (Parameter* q : lm_head_->parameters()) p.push_back(q);
  return p;
}

// ---- checkpointing: the buffer loan (see gpt.h) -------------------------------------------------
// Lends block i the shared set of its position in its segment for the loan's lifetime: swaps the
// handles of its activation buffers with the set's (the block then computes in the shared storage,
// and ensure_like finds it the right shape), and swaps them back at the end, exceptions included.
// A block that is not checkpointed keeps its own buffers: the loan does nothing.
class GPT::BufferLoan {
 public:
  BufferLoan(GPT& m, int block) : m_(m), block_(block) { swap(); }
  ~BufferLoan() { swap(); }
  BufferLoan(const BufferLoan&) = delete;
  BufferLoan& operator=(const BufferLoan&) = delete;

 private:
  void swap() {
    if (m_.shared_set_[block_] < 0) return;
    std::vector<Tensor*>& own = m_.block_buffers_[block_];
    std::vector<Tensor>& set = m_.shared_[m_.shared_set_[block_]];
    for (size_t k = 0; k < own.size(); ++k) std::swap(*own[k], set[k]);
  }
  GPT& m_;
  int block_;
};

float GPT::forward(const Tensor& ids, const Tensor& targets, BlockHooks* hooks) {
  ZT_CHECK(ids.dim() == 2 && ids.dtype() == DType::i32, "GPT::forward: ids must be i32 [B, T], got ",
           ids.str());
  ZT_CHECK(targets.shape() == ids.shape() && targets.dtype() == DType::i32,
           "GPT::forward: targets ", targets.str(), " must match ids ", ids.str());
  batch_ = ids.size(0);
  seq_ = ids.size(1);
  ZT_CHECK(seq_ <= cfg_.seq_len, "GPT::forward: sequence length ", seq_,
           " exceeds the model's seq_len ", cfg_.seq_len);
  const int64_t rows = batch_ * seq_, C = cfg_.n_embd, V = cfg_.vocab_size;
  BlockHooks none;
  BlockHooks& h = hooks ? *hooks : none;

  // Position ids 0..T-1 per sequence, on the ids' device: built on the host and copied up once
  // per shape, then cached. Rebuilt when B*T, T or the device changed ([2, 4] then [1, 8] keeps
  // B*T); the key is kept on the host, so checking it never reads the device.
  if (!pos_ids_.defined() || pos_ids_.numel() != rows || pos_seq_ != seq_ ||
      pos_ids_.device() != ids.device()) {
    Tensor host = Tensor::empty({rows}, DType::i32);
    int32_t* p = host.data<int32_t>();
    for (int64_t i = 0; i < rows; ++i) p[i] = static_cast<int32_t>(i % seq_);
    if (ids.device().is_cpu()) {
      pos_ids_ = host;
    } else {
      pos_ids_ = Tensor::empty({rows}, DType::i32, ids.device());
      ops::copy(host, pos_ids_);
    }
    pos_seq_ = seq_;
  }
  h.before_forward(0);
  const Tensor& tok = wte_.forward(ids.view({rows}));  // the activations' device and dtype
  const Tensor& pos = wpe_.forward(pos_ids_);
  if (segments_.empty()) {
    ensure_like(x0_, {rows, C}, tok);
  } else {
    // Boundaries start on 64-byte lines like any allocation, so a kernel sees the same alignment
    // in the forward and in the recompute.
    boundary_stride_ = (rows * C + 15) / 16 * 16;
    ensure_like(boundaries_, {static_cast<int64_t>(segments_.size()) + 1, boundary_stride_}, tok);
    x0_ = boundary(0);  // the first segment's input: the embedding writes it in place
  }
  ops::add(tok, pos, x0_);
  h.after_forward(0);

  Tensor x = x0_;  // a handle: a checkpointed block's output lives in a shared set
  for (int i = 0; i < cfg_.n_layer; ++i) {
    h.before_forward(i + 1);
    {
      BufferLoan loan(*this, i);
      x = blocks_[i]->forward(x, batch_, seq_);
    }
    // The end of a segment: save its output, the next segment's input (or the final LayerNorm's,
    // kept for a second backward of the same forward), before the shared set is used again.
    if (!segments_.empty() && i + 1 == segments_[segment_of_[i]].second) {
      Tensor saved = boundary(segment_of_[i] + 1);
      ops::copy(x, saved);
      x = saved;
    }
    h.after_forward(i + 1);
  }

  const int head = cfg_.n_layer + 1;
  h.before_forward(head);
  const Tensor& xf = ln_f_.forward(x);
  ensure_like(logits_, {rows, V}, xf);
  if (lm_head_) ops::copy(lm_head_->forward(xf), logits_);
  else ops::matmul(xf, wte_.weight().value, logits_, false, true);  // logits = xf wte^T
  ensure_like(probs_, {rows, V}, logits_);
  targets_ = targets.view({rows});
  // The one host read of a forward: the loss is a host float, so on a GPU this waits for the
  // stream (cross_entropy_forward synchronises); the engine counts on it.
  float loss = ops::cross_entropy_forward(logits_, targets_, probs_);
  h.after_forward(head);
  return loss;
}

void GPT::backward(float dloss, BlockHooks* hooks) {
  ZT_CHECK(targets_.defined(), "GPT::backward without a forward");
  const int64_t rows = batch_ * seq_, C = cfg_.n_embd, V = cfg_.vocab_size;
  BlockHooks none;
  BlockHooks& h = hooks ? *hooks : none;

  const int head = cfg_.n_layer + 1;
  h.before_backward(head);
  ensure_like(dlogits_, {rows, V}, probs_);
  ops::cross_entropy_backward(probs_, targets_, dloss, dlogits_);
  const Tensor* dx;
  if (lm_head_) {
    dx = &lm_head_->backward(dlogits_);
  } else {
    ensure_like(dx_, {rows, C}, dlogits_);
    Parameter& w = wte_.weight();
    ops::matmul(dlogits_, w.value, dx_);                                // dxf = dlogits wte
    ops::matmul(dlogits_, ln_f_.forward_output(), w.grad, true, false, 1.f, 1.f);  // dwte += dlogits^T xf
    dx = &dx_;
  }
  Tensor dxb = ln_f_.backward(*dx);  // a handle: a checkpointed block's dx lives in a shared set
  h.after_backward(head);

  for (int i = cfg_.n_layer - 1; i >= 0; --i) {
    if (!segments_.empty() && i + 1 == segments_[segment_of_[i]].second)
      recompute(segment_of_[i], h);
    h.before_backward(i + 1);
    {
      BufferLoan loan(*this, i);
      dxb = blocks_[i]->backward(dxb);
    }
    h.after_backward(i + 1);
  }

  h.before_backward(0);
  wte_.backward(dxb);
  wpe_.backward(dxb);
  h.after_backward(0);
}

// ---- checkpointing: saved boundaries and the recompute ------------------------------------------
Tensor GPT::boundary(int k) const {
  return boundaries_.flat_view(k * boundary_stride_, {batch_ * seq_, cfg_.n_embd});
}

// Reruns a segment's forward from its saved input, first block to last, so that each block's
// shared set holds what its backward reads. The saved input is never written in backward, so a
// second backward of the same forward recomputes the same values again.
void GPT::recompute(int segment, BlockHooks& h) {
  auto [first, end] = segments_[segment];
  Tensor x = boundary(segment);
  for (int i = first; i < end; ++i) {
    h.before_recompute(i + 1);
    {
      BufferLoan loan(*this, i);
      x = blocks_[i]->forward(x, batch_, seq_);
    }
    h.after_recompute(i + 1);
  }
}

}  // namespace zt::nn
