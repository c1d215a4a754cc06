// core/cuda/stub_attention.cpp: core/cuda/attention.h for a CPU-only build (ZT_WITH_CUDA=0).
// No GPU tensors can exist there, so core/ops.cpp never dispatches here in practice; a caller that
// does gets the usual "built without CUDA" error. The layout arithmetic is inline in the header
// and works (and is tested) in both builds.
#include "core/cuda/attention.h"
#include "core/error.h"

namespace zt::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw ::zt::Error(::zt::detail::str_cat(what, ": built without CUDA: rebuild with -DZT_CUDA=ON"));
}
}  // namespace

void attention_forward(const Tensor&, int, Tensor&, Tensor&) {
  no_cuda("cuda::attention_forward");
}
void attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int, Tensor&) {
  no_cuda("cuda::attention_backward");
}
AttentionPlanStats attention_plan_stats() { return {}; }
int64_t cudnn_runtime_version() { return 0; }
int64_t attention_graph_self_check(int64_t, int64_t, int64_t, int64_t, DType, bool) { return -1; }
AttentionEngineCheck attention_engine_check(int64_t, int64_t, int64_t, int64_t, DType, bool,
                                            const std::string&) {
  no_cuda("cuda::attention_engine_check");
}

}  // namespace zt::cuda
