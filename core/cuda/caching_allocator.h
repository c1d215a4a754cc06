// core/cuda/caching_allocator.h: the logic of the CUDA caching allocator, with no CUDA in it.
//
// Why cache: cudaMalloc and cudaFree are slow (tens of us to ms) and cudaFree synchronises the
// whole device, so a training step that allocated its activations afresh would stall every
// iteration. Like PyTorch's CUDACachingAllocator, freed blocks are kept and handed out again; after
// the first step the same sizes come back and no cudaMalloc happens in the steady state.
//
// How (a deliberately simple design, to be tuned on the H100):
//  - Sizes are rounded up to a size class: 512 B minimum, then four classes per power of two
//    (1, 1.25, 1.5, 1.75 x 2^k: at most 25% waste); from 64 MiB on, multiples of 2 MiB instead
//    (large flat ZeRO buffers waste < 3%). A request reuses only a free block of exactly its class.
//  - Free lists are per (device, stream, class). A block freed goes back to the list of the stream
//    it was allocated on, and is reused only by that stream: work on one stream runs in order, so
//    the next user's kernels start after the previous user's finished, and no event is needed.
//    A tensor also used on another stream must be kept alive by its user until that stream is done
//    with it (PyTorch's record_stream is not implemented).
//  - When the raw allocation fails (out of memory), every cached block of that device is released
//    and the allocation retried once; then the error goes up with the stats in the message.
//  - Blocks are never split or merged (PyTorch does, to limit fragmentation): left for tuning.
//
// The raw memory comes from a RawAllocator: cudaMalloc/cudaFree in core/cuda/allocator.cpp, a
// host fake in tests/gpu/test_cuda_allocator.cpp, so the caching logic is tested without a GPU.
// Thread-safe (one mutex): allocations happen at the rate of tensor creation, not of elements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace zt::cuda {

struct AllocatorStats {
  size_t in_use = 0;       // bytes of the blocks handed out (their size class, not the request)
  size_t peak_in_use = 0;  // maximum of in_use since start or reset_peak()
  size_t cached = 0;       // bytes of free blocks kept for reuse
  size_t reserved = 0;     // in_use + cached: what the raw allocator holds for us
  uint64_t allocs = 0;     // allocate() calls
  uint64_t cache_hits = 0; // of which served from a free list
  uint64_t raw_allocs = 0; // raw allocations (cudaMalloc) made
  uint64_t raw_frees = 0;  // raw frees (cudaFree) made
  uint64_t oom_retries = 0;  // raw allocations that failed and were retried after emptying
};

class RawAllocator {
 public:
  virtual ~RawAllocator() = default;
  // Returns nullptr when out of memory; throws on any other failure.
  virtual void* raw_alloc(size_t bytes, int device) = 0;
  virtual void raw_free(void* ptr, int device) noexcept = 0;
};

class CachingAllocator {
 public:
  explicit CachingAllocator(RawAllocator& raw) : raw_(raw) {}
  ~CachingAllocator();  // releases the cache (blocks still in use are leaked, not freed)
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // `stream` is an opaque key (a cudaStream_t); 0 bytes get the smallest class. Throws zt::CudaError
  // (with the stats) when the raw allocator has no memory even after emptying the cache.
  void* allocate(size_t bytes, int device, const void* stream);
  void deallocate(void* ptr) noexcept;  // nullptr is ignored; an unknown pointer is a bug (abort)
  size_t block_size(const void* ptr) const;  // the class size of a live block (0: not ours)

  void empty_cache();  // hands every free block back to the raw allocator
  AllocatorStats stats(int device) const;
  void reset_peak(int device);

  static size_t size_class(size_t bytes);

 private:
  struct Block {
    size_t size;
    int device;
    const void* stream;
  };
  using ListKey = std::tuple<int, const void*, size_t>;  // (device, stream, class)
  void release_cached_locked(int device);  // device < 0: all devices
  AllocatorStats& stats_locked(int device);

  RawAllocator& raw_;
  mutable std::mutex mu_;
  std::map<ListKey, std::vector<void*>> free_;
  std::unordered_map<const void*, Block> live_;
  std::map<int, AllocatorStats> stats_;
};

}  // namespace zt::cuda
