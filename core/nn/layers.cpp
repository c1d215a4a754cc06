// core/nn/layers.cpp: Linear, Embedding, LayerNorm, GELU, MLP.
// Every buffer follows the device and dtype of what it is computed from (ensure_like, module.h):
// outputs and saved tensors follow the input, input gradients the incoming gradient, the
// embedding's output its table. The ops (core/ops.h) then run wherever the tensors are.
#include "core/nn/layers.h"

#include "core/ops.h"

namespace zt::nn {
namespace {
// [d0, ..., dn-1, k] -> [d0, ..., dn-1, n]
Shape with_last(const Shape& s, int64_t n) {
  Shape r = s;
  r.back() = n;
  return r;
}
int64_t rows_of(const Tensor& t) { return t.numel() / t.size(-1); }
}  // namespace

// ---- Linear: y = x W^T + b ----------------------------------------------------------------------
Linear::Linear(int64_t in, int64_t out, bool bias) : in_(in), out_(out) {
  weight_ = &add_parameter("weight", {out, in}, true);
  if (bias) bias_ = &add_parameter("bias", {out}, false);
  for (Tensor* t : {&x_, &y_, &dx_}) add_activation_buffer(*t);
}

const Tensor& Linear::forward(const Tensor& x) {
  ZT_CHECK(x.dim() >= 1 && x.size(-1) == in_, "Linear(", in_, " -> ", out_, "): input ", x.str(),
           " should end in ", in_);
  x_ = x;
  ensure_like(y_, with_last(x.shape(), out_), x);
  Tensor x2 = x.view({rows_of(x), in_});
  Tensor y2 = y_.view({rows_of(x), out_});
  ops::matmul(x2, weight_->value, y2, false, true);
  if (bias_) ops::bias_add(y2, bias_->value);
  return y_;
}

const Tensor& Linear::backward(const Tensor& dy) {
  ZT_CHECK(x_.defined(), "Linear::backward without a forward");
  int64_t rows = rows_of(x_);
  Tensor dy2 = dy.view({rows, out_});
  Tensor x2 = x_.view({rows, in_});
  ensure_like(dx_, x_.shape(), dy);
  Tensor dx2 = dx_.view({rows, in_});
  ops::matmul(dy2, weight_->value, dx2);                       // dx = dy W
  ops::matmul(dy2, x2, weight_->grad, true, false, 1.f, 1.f);  // dW += dy^T x
  if (bias_) ops::bias_grad_acc(dy2, bias_->grad);             // db += sum_rows dy
  return dx_;
}

// ---- Embedding ----------------------------------------------------------------------------------
Embedding::Embedding(int64_t num, int64_t dim) : num_(num), dim_(dim) {
  weight_ = &add_parameter("weight", {num, dim}, true);
  for (Tensor* t : {&ids_, &y_}) add_activation_buffer(*t);
}

const Tensor& Embedding::forward(const Tensor& ids) {
  ids_ = ids;
  ensure_like(y_, {ids.numel(), dim_}, weight_->value);  // ids are i32: follow the table
  ops::embedding_forward(ids, weight_->value, y_);
  return y_;
}

void Embedding::backward(const Tensor& dy) {
  ZT_CHECK(ids_.defined(), "Embedding::backward without a forward");
  ops::embedding_backward_acc(ids_, dy.view({ids_.numel(), dim_}), weight_->grad);
}

// ---- LayerNorm ----------------------------------------------------------------------------------
LayerNorm::LayerNorm(int64_t dim, float eps) : dim_(dim), eps_(eps) {
  weight_ = &add_parameter("weight", {dim}, false);
  bias_ = &add_parameter("bias", {dim}, false);
  ops::fill(weight_->value, 1.f);
  for (Tensor* t : {&x_, &y_, &mean_, &rstd_, &dx_}) add_activation_buffer(*t);
}

const Tensor& LayerNorm::forward(const Tensor& x) {
  x_ = x;
  ensure_like(y_, x.shape(), x);
  ensure_like(mean_, {rows_of(x)}, DType::f32, x);  // statistics stay f32 in every dtype
  ensure_like(rstd_, {rows_of(x)}, DType::f32, x);
  ops::layernorm_forward(x, weight_->value, bias_->value, y_, mean_, rstd_, eps_);
  return y_;
}

const Tensor& LayerNorm::backward(const Tensor& dy) {
  ZT_CHECK(x_.defined(), "LayerNorm::backward without a forward");
  ensure_like(dx_, x_.shape(), dy);
  ops::layernorm_backward(dy, x_, weight_->value, mean_, rstd_, dx_, weight_->grad, bias_->grad);
  return dx_;
}

// ---- GELU ---------------------------------------------------------------------------------------
GELU::GELU() {
  for (Tensor* t : {&x_, &y_, &dx_}) add_activation_buffer(*t);
}

const Tensor& GELU::forward(const Tensor& x) {
  x_ = x;
  ensure_like(y_, x.shape(), x);
  ops::gelu_forward(x, y_);
  return y_;
}

const Tensor& GELU::backward(const Tensor& dy) {
  ZT_CHECK(x_.defined(), "GELU::backward without a forward");
  ensure_like(dx_, x_.shape(), dy);
  ops::gelu_backward(x_, dy, dx_);
  return dx_;
}

// ---- MLP: proj(gelu(fc(x))) ---------------------------------------------------------------------
MLP::MLP(int64_t dim, int64_t hidden) : fc_(dim, hidden), proj_(hidden, dim) {
  add_child("fc", fc_);
  add_child("proj", proj_);
  add_child("gelu", gelu_);  // no parameters: registered for its activation buffers
}

const Tensor& MLP::forward(const Tensor& x) { return proj_.forward(gelu_.forward(fc_.forward(x))); }

const Tensor& MLP::backward(const Tensor& dy) {
  return fc_.backward(gelu_.backward(proj_.backward(dy)));
}

}  // namespace zt::nn
