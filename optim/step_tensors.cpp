// optim/step_tensors.cpp: Optimizer::step_tensors for every optimizer that has no device step of
// its own (optimizer.h has the contract): on the CPU, the extra passes (widen, unscale, round to
// 16 bit) done one by one around step(); on a GPU, the error "not implemented on CUDA yet".
#include "core/error.h"
#include "core/ops.h"
#include "optim/detail/step_tensors.h"
#include "optim/optimizer.h"

#include <cmath>

namespace zt::optim {
namespace detail {

void check_step_tensors(const std::string& who, const Tensor& params, const Tensor& grads,
                        const StepExtras& x, int64_t n) {
  ZT_CHECK(params.defined() && params.dtype() == DType::f32, who,
           ": the parameters must be an f32 tensor, got ", params.str());
  ZT_CHECK(n < 0 || params.numel() == n, who, ": the parameters ", params.str(), " have ",
           params.numel(), " elements, the optimizer was initialised for ", n);
  ZT_CHECK(grads.defined() && grads.numel() == params.numel(), who, ": gradient ", grads.str(),
           " does not match the parameters ", params.str());
  ZT_CHECK(grads.dtype() == DType::f32 || grads.dtype() == DType::bf16 ||
               grads.dtype() == DType::f16,
           who, ": gradient dtype must be f32, bf16 or f16, got ", grads.str());
  ZT_CHECK(grads.device() == params.device(), who, ": gradient ", grads.str(),
           " and parameters ", params.str(), " are on different devices");
  ZT_CHECK(std::isfinite(x.grad_scale), who, ": gradient scale ", x.grad_scale,
           " is not finite");
  if (x.params16) {
    const Tensor& q = *x.params16;
    ZT_CHECK(q.defined() && (q.dtype() == DType::bf16 || q.dtype() == DType::f16) &&
                 q.numel() == params.numel() && q.device() == params.device(),
             who, ": the 16-bit copy must be bf16 or f16 with the parameters' size and device, ",
             "got ", q.str(), " for ", params.str());
  }
}

void throw_not_on_cuda(const std::string& who, const Tensor& params) {
  throw Error(::zt::detail::str_cat(
      "optimizer ", who, ": not implemented on CUDA yet (parameters ", params.str(),
      "); only Adam and AdamW have a device step. Use Adam/AdamW, or keep this optimizer on the "
      "CPU (zero_optimization.offload_optimizer.device: cpu)"));
}

}  // namespace detail

void Optimizer::step_tensors(Tensor& params, const Tensor& grads,
                             const std::vector<Segment>& segments, float lr,
                             const StepExtras& x) {
  detail::check_step_tensors(name(), params, grads, x, -1);
  if (params.device().is_cuda()) detail::throw_not_on_cuda(name(), params);
  Tensor g = grads;
  if (grads.dtype() != DType::f32 || x.grad_scale != 1.f) {
    g = grads.dtype() == DType::f32 ? grads.clone() : grads.to(DType::f32);
    if (x.grad_scale != 1.f) ops::scale(g, x.grad_scale);  // one f32 rounding per element
  }
  step(params.data<float>(), g.data<float>(), params.numel(), segments, lr);
  if (x.params16) ops::copy(params, *x.params16);  // round to nearest even (core/dtype.h)
}

}  // namespace zt::optim
