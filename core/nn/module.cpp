// core/nn/module.cpp: parameter and activation-buffer registries, and naming.
#include "core/nn/module.h"

#include "core/ops.h"

namespace zt::nn {

void ensure_like(Tensor& t, const Shape& shape, DType dtype, const Tensor& like) {
  ZT_CHECK(like.defined(), "ensure_like: the tensor to follow (device, dtype) is undefined");
  const Device device = like.device();
  if (!t.defined() || t.shape() != shape || t.dtype() != dtype || t.device() != device)
    t = Tensor::empty(shape, dtype, device);
}

void ensure_like(Tensor& t, const Shape& shape, const Tensor& like) {
  ensure_like(t, shape, like.dtype(), like);
}

void ensure_shape(Tensor& t, const Shape& shape, DType dtype) {
  if (!t.defined() || t.shape() != shape || t.dtype() != dtype || !t.device().is_cpu())
    t = Tensor::empty(shape, dtype);
}

void Parameter::rebind(Tensor new_value, Tensor new_grad, bool copy_value) {
  ZT_CHECK(new_value.numel() == value.numel() && new_grad.numel() == value.numel(),
           "Parameter::rebind `", name, "`: ", value.str(), " cannot be re-pointed at ",
           new_value.str(), " / ", new_grad.str());
  new_value = new_value.view(value.shape());
  new_grad = new_grad.view(value.shape());
  if (copy_value) ops::copy(value, new_value);
  value = std::move(new_value);
  grad = std::move(new_grad);
}

Parameter& Module::add_parameter(const std::string& name, Shape shape, bool decay) {
  auto p = std::make_unique<Parameter>();
  p->name = name;
  p->shape = shape;
  p->value = Tensor::zeros(shape);
  p->grad = Tensor::zeros(shape);
  p->decay = decay;
  params_.push_back(std::move(p));
  return *params_.back();
}

void Module::add_child(const std::string& name, Module& child) {
  // Names are qualified once, here: children are built before their parent adds them, so each
  // level prefixes its own name and a parameter ends up "blocks.0.attn.qkv.weight" for good, no
  // matter which module is later asked for its parameters.
  for (Parameter* p : child.parameters()) p->name = name + "." + p->name;
  children_.emplace_back(name, &child);
}

void Module::collect(std::vector<Parameter*>& out) {
  for (auto& p : params_) out.push_back(p.get());
  for (auto& entry : children_) entry.second->collect(out);
}

std::vector<Parameter*> Module::parameters() {
  std::vector<Parameter*> out;
  collect(out);
  return out;
}

void Module::collect_buffers(std::vector<Tensor*>& out) {
  out.insert(out.end(), buffers_.begin(), buffers_.end());
  for (auto& entry : children_) entry.second->collect_buffers(out);
}

std::vector<Tensor*> Module::activation_buffers() {
  std::vector<Tensor*> out;
  collect_buffers(out);
  return out;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (Parameter* p : parameters()) n += p->numel();
  return n;
}

void Module::zero_grad() {
  for (Parameter* p : parameters()) ops::fill(p->grad, 0.f);
}

}  // namespace zt::nn
