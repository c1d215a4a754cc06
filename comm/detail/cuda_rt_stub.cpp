// comm/detail/cuda_rt_stub.cpp: comm/detail/cuda_rt.h in a CPU-only build: no GPU; the staging
// calls throw (they are only reached with device tensors, which a CPU-only build cannot make).
#include "comm/detail/cuda_rt.h"
#include "core/error.h"

namespace zt::comm::detail {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw Error(zt::detail::str_cat(what, ": built without CUDA: rebuild with -DZT_CUDA=ON"));
}
}  // namespace

std::string gpu_identity(int) { return ""; }
StreamFence::StreamFence(int device) : device_(device) { no_cuda("comm stream fence"); }
StreamFence::~StreamFence() = default;
void StreamFence::host_wait() { no_cuda("comm stream fence"); }
void copy_d2h(void*, const void*, size_t, int) { no_cuda("comm device staging"); }
void copy_h2d(void*, const void*, size_t, int) { no_cuda("comm device staging"); }
void copy_d2h_2d(void*, size_t, const void*, size_t, size_t, size_t, int) {
  no_cuda("comm device staging");
}
void copy_h2d_2d(void*, size_t, const void*, size_t, size_t, size_t, int) {
  no_cuda("comm device staging");
}
bool pin_host(void*, size_t, std::string* why) {
  if (why) *why = "built without CUDA";
  return false;
}
void unpin_host(void*) noexcept {}

}  // namespace zt::comm::detail
