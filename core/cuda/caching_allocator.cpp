// core/cuda/caching_allocator.cpp: the size classes, free lists and statistics of the CUDA caching
// allocator (the design is in caching_allocator.h). Plain C++, compiled in every build so that its
// unit tests run on machines without a GPU.
#include "core/cuda/caching_allocator.h"

#include <bit>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace zt::cuda {

namespace {
constexpr size_t kMinBlock = 512;
constexpr size_t kLargeFrom = size_t{64} << 20;  // from here on, multiples of kLargeStep
constexpr size_t kLargeStep = size_t{2} << 20;
}  // namespace

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes <= kMinBlock) return kMinBlock;
  if (bytes >= kLargeFrom) return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
  // Four classes per octave: with 2^e <= bytes < 2^(e+1), step 2^(e-2).
  const int e = std::bit_width(bytes) - 1;
  const size_t step = size_t{1} << (e - 2);
  return (bytes + step - 1) / step * step;
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked(-1);
}

AllocatorStats& CachingAllocator::stats_locked(int device) { return stats_[device]; }

void* CachingAllocator::allocate(size_t bytes, int device, const void* stream) {
  const size_t size = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  AllocatorStats& st = stats_locked(device);
  ++st.allocs;
  void* p = nullptr;
  auto it = free_.find(ListKey{device, stream, size});
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    st.cached -= size;
    ++st.cache_hits;
  } else {
    p = raw_.raw_alloc(size, device);
    if (!p) {
      // Out of memory: give back what the cache holds on this device (other streams' blocks and
      // other classes) and try once more.
      ++st.oom_retries;
      release_cached_locked(device);
      p = raw_.raw_alloc(size, device);
    }
    if (!p) {
      throw CudaError(detail::str_cat(
          "CUDA out of memory on cuda:", device, " allocating ", bytes, " bytes (class ", size,
          "): ", st.in_use, " bytes in use by tensors, peak ", st.peak_in_use,
          "; the cache was emptied and the allocation retried. Lower the micro-batch size, or "
          "use a higher ZeRO stage or offload"));
    }
    ++st.raw_allocs;
    st.reserved += size;
  }
  st.in_use += size;
  if (st.in_use > st.peak_in_use) st.peak_in_use = st.in_use;
  live_.emplace(p, Block{size, device, stream});
  return p;
}

void CachingAllocator::deallocate(void* ptr) noexcept {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) {
    std::fprintf(stderr, "zerotrain: internal error: CUDA caching allocator: free of %p, which it "
                 "did not allocate (or freed twice)\n", ptr);
    std::abort();
  }
  const Block b = it->second;
  live_.erase(it);
  AllocatorStats& st = stats_locked(b.device);
  st.in_use -= b.size;
  st.cached += b.size;
  free_[ListKey{b.device, b.stream, b.size}].push_back(ptr);
}

size_t CachingAllocator::block_size(const void* ptr) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  return it == live_.end() ? 0 : it->second.size;
}

void CachingAllocator::release_cached_locked(int device) {
  for (auto it = free_.begin(); it != free_.end();) {
    const int dev = std::get<0>(it->first);
    if (device >= 0 && dev != device) {
      ++it;
      continue;
    }
    const size_t size = std::get<2>(it->first);
    AllocatorStats& st = stats_locked(dev);
    for (void* p : it->second) {
      raw_.raw_free(p, dev);
      ++st.raw_frees;
      st.cached -= size;
      st.reserved -= size;
    }
    it = free_.erase(it);
  }
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked(-1);
}

AllocatorStats CachingAllocator::stats(int device) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = stats_.find(device);
  return it == stats_.end() ? AllocatorStats{} : it->second;
}

void CachingAllocator::reset_peak(int device) {
  std::lock_guard<std::mutex> lock(mu_);
  AllocatorStats& st = stats_locked(device);
  st.peak_in_use = st.in_use;
}

}  // namespace zt::cuda
