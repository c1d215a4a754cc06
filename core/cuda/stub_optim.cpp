// core/cuda/stub_optim.cpp: core/cuda/optim.h for a CPU-only build (ZT_WITH_CUDA=0). There are no
// GPUs, so optim/ and precision/ only get here when a caller put a tensor on a GPU anyway; every
// function throws "built without CUDA" (flashlight's missing-backend stubs).
#include "core/cuda/optim.h"

#include "core/error.h"

namespace zt::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw ::zt::Error(::zt::detail::str_cat(what, ": built without CUDA: rebuild with -DZT_CUDA=ON"));
}
}  // namespace

AdamWorkList adam_work_list(const std::vector<AdamRun>&, int64_t, Device) {
  no_cuda("cuda::adam_work_list");
}
void fused_adam(const AdamCoeffs&, const AdamWorkList&, Tensor&, const Tensor&, Tensor&, Tensor&,
                Tensor*) {
  no_cuda("cuda::fused_adam");
}
Tensor grad_stats_buffer(Device) { no_cuda("cuda::grad_stats_buffer"); }
void grad_stats_reset(Tensor&) { no_cuda("cuda::grad_stats_reset"); }
void grad_stats_accumulate(const std::vector<Tensor>&, Tensor&) {
  no_cuda("cuda::grad_stats_accumulate");
}
GradStats grad_stats_read(const Tensor&) { no_cuda("cuda::grad_stats_read"); }

}  // namespace zt::cuda
