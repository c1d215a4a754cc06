// optim/detail/step_tensors.h: the argument checks of Optimizer::step_tensors, shared by the
// default (optim/step_tensors.cpp) and Adam's device step (optim/adam.cpp). Private to optim/.
#pragma once

#include <string>

#include "optim/optimizer.h"

namespace zt::optim::detail {

// Throws zt::Error naming `who` unless: params is a defined f32 tensor of n elements; grads has
// n elements in f32/bf16/f16 on the same device; extras.params16, when set, has n elements in
// bf16/f16 on that device; grad_scale is finite. n < 0: any size.
void check_step_tensors(const std::string& who, const Tensor& params, const Tensor& grads,
                        const StepExtras& extras, int64_t n);

// The error of an optimizer without a device step, for tensors on a GPU.
[[noreturn]] void throw_not_on_cuda(const std::string& who, const Tensor& params);

}  // namespace zt::optim::detail
