// core/nn/module.h: Module, the base of every layer: named parameters with their gradients, child
// modules, and explicit forward/backward (no autograd: each layer saves what its backward needs).
//
// Parameters are Tensors, i.e. views. The ZeRO engine walks `named_parameters()` once, copies each
// value into its flat buffer and re-points `value` and `grad` at ranges of the flat buffers
// (`Parameter::rebind`); from then on the layers read and write the flat buffers without knowing.
//
// Layers also register the tensors they keep between calls (saved inputs, forward outputs,
// backward workspaces) as *activation buffers*. Nothing else reads the list but activation
// checkpointing: a checkpointed Block lends its buffers out to one set shared by all checkpointed
// blocks, which is what makes its memory go away (see gpt.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace zt::nn {

struct Parameter {
  std::string name;  // full dotted name, e.g. "blocks.0.attn.qkv.weight" (PyTorch's naming)
  Tensor value;
  Tensor grad;       // same shape; accumulated (+=) by backward, zeroed by the optimizer/engine
  bool decay = true; // weight decay applies (matrices); false for biases, LayerNorm, embeddings
                     // only where the config says so (see GPT::parameters)
  // Fixed at creation. `value` may point at nothing while ZeRO stage 3 has the parameter released
  // (zero/stage3.h), so code that needs the shape or size at any time reads these.
  Shape shape;
  int64_t numel() const { return shape_numel(shape); }
  int64_t flat_offset = -1;  // where the ZeRO engine put it in its flat buffer (-1: no engine)

  // Re-point value/grad at new storage (e.g. ranges of flat buffers). Copies the current value in
  // when copy_value is set. Shapes must match.
  void rebind(Tensor new_value, Tensor new_grad, bool copy_value = true);
};

// Makes `t` a tensor of `shape` on the device of `like` (the input or parameter it is computed
// from), in `like`'s dtype or the one given, reallocating only when shape, dtype or device changed.
// Layers keep their activation buffers across steps this way (no allocation in the steady state),
// and a model whose parameters and inputs are on a GPU computes there, no layer naming a device.
void ensure_like(Tensor& t, const Shape& shape, const Tensor& like);
void ensure_like(Tensor& t, const Shape& shape, DType dtype, const Tensor& like);
// The host-only form: an f32 (or `dtype`) tensor of `shape` on the CPU.
void ensure_shape(Tensor& t, const Shape& shape, DType dtype = DType::f32);

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter of this module and its children, depth first in registration order, with
  // dotted names. The order is the model's canonical order: flat buffers follow it.
  std::vector<Parameter*> parameters();
  int64_t num_parameters();
  void zero_grad();

  // Every activation buffer of this module and its children, depth first in registration order.
  // The order depends only on the module's type, so two Blocks' lists match entry by entry.
  std::vector<Tensor*> activation_buffers();

 protected:
  Parameter& add_parameter(const std::string& name, Shape shape, bool decay = true);
  void add_child(const std::string& name, Module& child);
  // Registers a member tensor kept across calls (Modules are neither copied nor moved, so the
  // address stays valid). Register every such member: an unregistered one stays per block.
  void add_activation_buffer(Tensor& t) { buffers_.push_back(&t); }

 private:
  void collect(std::vector<Parameter*>& out);
  void collect_buffers(std::vector<Tensor*>& out);
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<Tensor*> buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
};

}  // namespace zt::nn
