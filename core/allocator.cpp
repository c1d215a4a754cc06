// core/allocator.cpp: 64-byte aligned host allocations, counted for memory accounting; device
// allocations go to the CUDA caching allocator (core/cuda/allocator.h; "built without CUDA" in a
// CPU-only build).
#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <new>

#include "core/cuda/allocator.h"
#include "core/error.h"

namespace zt {
namespace {
std::atomic<size_t> g_host_bytes{0};
// The size of each allocation is kept in the 64 bytes before it, so free can un-count it.
constexpr size_t kHeader = kHostAlignment;
}  // namespace

void* alloc_bytes(size_t bytes, Device device) {
  if (device.is_cuda()) return cuda::device_alloc(bytes, device.index);
  size_t total = (bytes + kHeader + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  void* base = std::aligned_alloc(kHostAlignment, total);
  if (!base) throw Error(detail::str_cat("out of host memory allocating ", bytes, " bytes"));
  *static_cast<size_t*>(base) = bytes;
  g_host_bytes += bytes;
  return static_cast<char*>(base) + kHeader;
}

void free_bytes(void* ptr, Device device) noexcept {
  if (!ptr) return;
  if (device.is_cuda()) return cuda::device_free(ptr);
  char* base = static_cast<char*>(ptr) - kHeader;
  g_host_bytes -= *reinterpret_cast<size_t*>(base);
  std::free(base);
}

size_t host_bytes_in_use() { return g_host_bytes.load(); }

}  // namespace zt
