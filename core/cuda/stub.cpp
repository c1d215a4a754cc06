// core/cuda/stub.cpp: the CUDA backend's public and core-private interfaces for a CPU-only build
// (ZT_WITH_CUDA=0): core/cuda/device.h, stream.h, allocator.h, blas_lt.h and ops.h.
//
// There are no GPUs, so callers that ask device_count() take the CPU path; a caller that insists
// on a GPU (a config saying `device: cuda`) gets an error telling how to get one (flashlight's
// missing-backend stubs).
#include <utility>

#include "core/cuda/allocator.h"
#include "core/cuda/blas_lt.h"
#include "core/cuda/device.h"
#include "core/cuda/ops.h"
#include "core/cuda/stream.h"
#include "core/error.h"

namespace zt::cuda {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw ::zt::Error(::zt::detail::str_cat(what, ": built without CUDA: rebuild with -DZT_CUDA=ON"));
}
}  // namespace

int device_count() noexcept { return 0; }

std::string device_summary() { return "built without CUDA"; }

void cast_f32_to_bf16(const float*, uint16_t*, size_t) { no_cuda("cuda::cast_f32_to_bf16"); }
void cast_f32_to_f16(const float*, uint16_t*, size_t) { no_cuda("cuda::cast_f32_to_f16"); }
void cast_bf16_to_f32(const uint16_t*, float*, size_t) { no_cuda("cuda::cast_bf16_to_f32"); }
void cast_f16_to_f32(const uint16_t*, float*, size_t) { no_cuda("cuda::cast_f16_to_f32"); }

// ---- stream.h: no streams or events; the current stream is the (absent) default one ----------
Stream Stream::create(int, bool, int) { no_cuda("cuda::Stream::create"); }
Stream::~Stream() = default;
Stream::Stream(Stream&& o) noexcept
    : handle_(std::exchange(o.handle_, nullptr)), device_(o.device_),
      owned_(std::exchange(o.owned_, false)) {}
Stream& Stream::operator=(Stream&& o) noexcept {
  handle_ = std::exchange(o.handle_, nullptr);
  device_ = o.device_;
  owned_ = std::exchange(o.owned_, false);
  return *this;
}
void Stream::synchronize() const { no_cuda("cuda::Stream::synchronize"); }
bool Stream::query() const { no_cuda("cuda::Stream::query"); }
void Stream::wait(const Event&) const { no_cuda("cuda::Stream::wait"); }
Event::Event(bool) { no_cuda("cuda::Event"); }
Event::~Event() = default;
Event::Event(Event&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
Event& Event::operator=(Event&& o) noexcept {
  handle_ = std::exchange(o.handle_, nullptr);
  return *this;
}
void Event::record(const Stream&) { no_cuda("cuda::Event::record"); }
void Event::synchronize() const { no_cuda("cuda::Event::synchronize"); }
bool Event::query() const { no_cuda("cuda::Event::query"); }
float Event::elapsed_ms(const Event&, const Event&) { no_cuda("cuda::Event::elapsed_ms"); }
CUstream_st* current_stream() { return nullptr; }
StreamGuard::StreamGuard(const Stream&) : prev_stream_(nullptr), prev_device_(0) {
  no_cuda("cuda::StreamGuard");
}
StreamGuard::~StreamGuard() = default;

// ---- allocator.h: nothing is ever allocated -----------------------------------------------------
void* device_alloc(size_t, int device) {
  no_cuda(::zt::detail::str_cat("allocating on cuda:", device).c_str());
}
void device_free(void*) noexcept {}
AllocatorStats allocator_stats(int) { return {}; }
void reset_peak_memory(int) {}
void empty_cache() {}

// ---- blas_lt.h: no products, no counts; the switch is remembered ---------------------------------
namespace {
bool g_fused_epilogues = true;
}
BlasStats blas_stats() { return {}; }
void set_fused_epilogues(bool on) { g_fused_epilogues = on; }
bool fused_epilogues() { return g_fused_epilogues; }

// ---- ops.h: unreachable without CUDA tensors, but linked -----------------------------------------
void fill(Tensor&, float) { no_cuda("fill"); }
void copy(const Tensor&, Tensor&) { no_cuda("copy"); }
void add(const Tensor&, const Tensor&, Tensor&) { no_cuda("add"); }
void axpy(float, const Tensor&, Tensor&) { no_cuda("axpy"); }
void scale(Tensor&, float) { no_cuda("scale"); }
double sum_squares(const Tensor&) { no_cuda("sum_squares"); }
bool all_finite(const Tensor&) { no_cuda("all_finite"); }
void bias_add(Tensor&, const Tensor&, int64_t, int64_t) { no_cuda("bias_add"); }
void bias_grad_acc(const Tensor&, Tensor&, int64_t, int64_t) { no_cuda("bias_grad_acc"); }
void gelu_forward(const Tensor&, Tensor&) { no_cuda("gelu_forward"); }
void gelu_backward(const Tensor&, const Tensor&, Tensor&) { no_cuda("gelu_backward"); }
void matmul(const Tensor&, const Tensor&, Tensor&, int64_t, int64_t, int64_t, int64_t, bool, bool,
            float, float, bool) {
  no_cuda("matmul");
}
bool linear_forward_fused(const Tensor&, const Tensor&, const Tensor*, Tensor&, Tensor*, int64_t,
                          int64_t, int64_t) {
  no_cuda("linear_forward");
}
bool weight_grad_fused(const Tensor&, const Tensor&, Tensor&, Tensor&, int64_t, int64_t, int64_t) {
  no_cuda("linear_backward");
}
bool linear_dgelu_fused(const Tensor&, const Tensor&, const Tensor&, Tensor&, int64_t, int64_t,
                        int64_t) {
  no_cuda("linear_backward_dgelu");
}
void layernorm_forward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&,
                       int64_t, int64_t, float) {
  no_cuda("layernorm_forward");
}
void layernorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                        Tensor&, Tensor&, Tensor&, int64_t, int64_t) {
  no_cuda("layernorm_backward");
}
void softmax_forward(const Tensor&, Tensor&, int64_t, int64_t) { no_cuda("softmax_forward"); }
void softmax_backward(const Tensor&, const Tensor&, Tensor&, int64_t, int64_t) {
  no_cuda("softmax_backward");
}
void embedding_forward(const Tensor&, const Tensor&, Tensor&) { no_cuda("embedding_forward"); }
void embedding_backward_acc(const Tensor&, const Tensor&, Tensor&) {
  no_cuda("embedding_backward_acc");
}
float cross_entropy_forward(const Tensor&, const Tensor&, Tensor&, int64_t, int64_t) {
  no_cuda("cross_entropy_forward");
}
void check_ids() { no_cuda("check_ids"); }
void cross_entropy_backward(const Tensor&, const Tensor&, float, Tensor&, int64_t, int64_t) {
  no_cuda("cross_entropy_backward");
}

}  // namespace zt::cuda
