// core/nn/attention.cpp: CausalSelfAttention = qkv projection -> per-head causal attention ->
// output projection.
//
// What attention saves for backward depends on the backend (core/ops.h): on the CPU the softmax
// probabilities [B, H, T, T], on CUDA cuDNN's softmax statistics [B, H, T] (flash attention never
// forms the T x T matrix). `probs_` holds whichever ops::attention_saved_shape asks for, and the
// attention buffers follow the qkv activation's device and dtype. Backward also hands the forward
// output (att_, still intact: it is proj_'s saved input) to the op, which cuDNN needs.
#include "core/nn/attention.h"

#include "core/ops.h"

namespace zt::nn {
CausalSelfAttention::CausalSelfAttention(int64_t dim, int n_head)
    : dim_(dim), n_head_(n_head), qkv_(dim, 3 * dim), proj_(dim, dim) {
  ZT_CHECK(n_head > 0 && dim % n_head == 0, "CausalSelfAttention: width ", dim,
           " is not divisible by n_head ", n_head);
  add_child("qkv", qkv_);
  add_child("proj", proj_);
  for (Tensor* t : {&att_, &probs_, &dqkv_}) add_activation_buffer(*t);
}

const Tensor& CausalSelfAttention::forward(const Tensor& x, int64_t batch, int64_t seq) {
  ZT_CHECK(x.numel() == batch * seq * dim_, "CausalSelfAttention: input ", x.str(), " is not [",
           batch, ", ", seq, ", ", dim_, "]");
  batch_ = batch;
  seq_ = seq;
  const Tensor qkv = qkv_.forward(x.view({batch * seq, dim_})).view({batch, seq, 3 * dim_});
  ensure_like(att_, {batch, seq, dim_}, qkv.dtype(), qkv);
  ensure_like(probs_, ops::attention_saved_shape(qkv, n_head_), DType::f32, qkv);
  ops::attention_forward(qkv, n_head_, att_, probs_);
  return proj_.forward(att_.view({batch * seq, dim_}));
}

const Tensor& CausalSelfAttention::backward(const Tensor& dy) {
  const Tensor& datt = proj_.backward(dy);
  // qkv_'s forward output is still its y buffer: the saved input of attention.
  Tensor qkv = qkv_.forward_output().view({batch_, seq_, 3 * dim_});
  ensure_like(dqkv_, {batch_, seq_, 3 * dim_}, qkv.dtype(), qkv);
  ops::attention_backward(datt.view({batch_, seq_, dim_}), qkv, att_, probs_, n_head_, dqkv_);
  return qkv_.backward(dqkv_.view({batch_ * seq_, 3 * dim_}));
}

}  // namespace zt::nn
