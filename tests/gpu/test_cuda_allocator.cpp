// tests/gpu/test_cuda_allocator.cpp: the CUDA caching allocator, streams and events.
//
// The caching logic (size classes, per-stream free lists, statistics, empty_cache, the out-of-memory
// retry) is tested on the host through a fake RawAllocator, so these tests run on every machine.
// The cudaMalloc-backed allocator behind Tensor::empty(..., Device::cuda()), streams and events need
// a GPU: those tests skip themselves without one, saying why.
#include "core/cuda/allocator.h"
#include "core/cuda/caching_allocator.h"
#include "core/cuda/device.h"
#include "core/cuda/stream.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>

namespace {

using zt::cuda::CachingAllocator;

#define SKIP_WITHOUT_GPU()                                                                       \
  do {                                                                                           \
    if (zt::cuda::device_count() == 0) GTEST_SKIP() << "no GPU: " << zt::cuda::device_summary(); \
  } while (0)

// Host memory standing in for a GPU of `capacity` bytes.
class FakeRaw final : public zt::cuda::RawAllocator {
 public:
  explicit FakeRaw(size_t capacity) : capacity_(capacity) {}
  void* raw_alloc(size_t bytes, int) override {
    if (used_ + bytes > capacity_) return nullptr;
    used_ += bytes;
    ++allocs;
    void* p = std::malloc(bytes);
    sizes_[p] = bytes;
    return p;
  }
  void raw_free(void* p, int) noexcept override {
    ++frees;
    used_ -= sizes_[p];
    sizes_.erase(p);
    std::free(p);
  }
  int allocs = 0, frees = 0;

 private:
  size_t capacity_, used_ = 0;
  std::map<void*, size_t> sizes_;
};

const void* kStreamA = reinterpret_cast<const void*>(0x10);
const void* kStreamB = reinterpret_cast<const void*>(0x20);

TEST(CachingAllocator, SizeClasses) {
  EXPECT_EQ(CachingAllocator::size_class(0), 512u);
  EXPECT_EQ(CachingAllocator::size_class(1), 512u);
  EXPECT_EQ(CachingAllocator::size_class(512), 512u);
  EXPECT_EQ(CachingAllocator::size_class(513), 640u);  // 512 * 1.25
  EXPECT_EQ(CachingAllocator::size_class(1024), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(1025), 1280u);
  EXPECT_EQ(CachingAllocator::size_class(size_t{64} << 20), size_t{64} << 20);
  EXPECT_EQ(CachingAllocator::size_class((size_t{64} << 20) + 1), size_t{66} << 20);
  size_t prev = 0;
  for (size_t b = 1; b < (size_t{300} << 20); b = b * 9 / 8 + 7) {
    const size_t c = CachingAllocator::size_class(b);
    EXPECT_GE(c, b);
    EXPECT_LE(c, std::max<size_t>(512, b + b / 4)) << b;  // at most 25% waste
    EXPECT_GE(c, prev);                                    // monotone
    EXPECT_EQ(CachingAllocator::size_class(c), c);         // a class is its own class
    prev = c;
  }
}

TEST(CachingAllocator, ReusesFreedBlocksPerStream) {
  FakeRaw raw(size_t{1} << 30);
  CachingAllocator a(raw);
  void* p = a.allocate(1000, 0, kStreamA);
  EXPECT_EQ(a.block_size(p), 1024u);
  a.deallocate(p);
  void* q = a.allocate(1000, 0, kStreamA);  // same class, same stream: the cached block
  EXPECT_EQ(q, p);
  void* r = a.allocate(1000, 0, kStreamB);  // another stream never takes A's blocks
  EXPECT_NE(r, p);
  void* s = a.allocate(900, 0, kStreamA);   // same class (1024) but p is in use: a new block
  EXPECT_NE(s, p);
  EXPECT_EQ(raw.allocs, 3);
  const auto st = a.stats(0);
  EXPECT_EQ(st.allocs, 4u);
  EXPECT_EQ(st.cache_hits, 1u);
  EXPECT_EQ(st.raw_allocs, 3u);
  EXPECT_EQ(st.in_use, 3u * 1024);
  a.deallocate(q);
  a.deallocate(r);
  a.deallocate(s);
  // Steady state: the same pattern again makes no raw allocation.
  for (int step = 0; step < 5; ++step) {
    void* x = a.allocate(1000, 0, kStreamA);
    void* y = a.allocate(1000, 0, kStreamB);
    void* z = a.allocate(1020, 0, kStreamA);
    a.deallocate(x);
    a.deallocate(y);
    a.deallocate(z);
  }
  EXPECT_EQ(raw.allocs, 3);
  a.deallocate(nullptr);  // ignored
}

TEST(CachingAllocator, StatsAndEmptyCache) {
  FakeRaw raw(size_t{1} << 30);
  CachingAllocator a(raw);
  void* p = a.allocate(4096, 0, kStreamA);
  void* q = a.allocate(8192, 0, kStreamA);
  void* r = a.allocate(512, 1, kStreamA);  // another device keeps its own stats
  auto st = a.stats(0);
  EXPECT_EQ(st.in_use, 4096u + 8192u);
  EXPECT_EQ(st.peak_in_use, 4096u + 8192u);
  EXPECT_EQ(st.cached, 0u);
  EXPECT_EQ(st.reserved, 4096u + 8192u);
  EXPECT_EQ(a.stats(1).in_use, 512u);
  a.deallocate(q);
  st = a.stats(0);
  EXPECT_EQ(st.in_use, 4096u);
  EXPECT_EQ(st.peak_in_use, 4096u + 8192u);
  EXPECT_EQ(st.cached, 8192u);
  EXPECT_EQ(st.reserved, 4096u + 8192u);
  a.reset_peak(0);
  EXPECT_EQ(a.stats(0).peak_in_use, 4096u);
  a.empty_cache();  // frees q's block only
  st = a.stats(0);
  EXPECT_EQ(st.cached, 0u);
  EXPECT_EQ(st.reserved, 4096u);
  EXPECT_EQ(st.raw_frees, 1u);
  EXPECT_EQ(raw.frees, 1);
  EXPECT_EQ(a.block_size(p), 4096u);
  a.deallocate(p);
  a.deallocate(r);
}

TEST(CachingAllocator, OutOfMemoryEmptiesTheCacheAndRetries) {
  FakeRaw raw(3 * 1024);
  CachingAllocator a(raw);
  void* p = a.allocate(1024, 0, kStreamA);
  void* q = a.allocate(2048, 0, kStreamB);
  a.deallocate(q);  // cached on stream B; the fake "GPU" is full
  // A 2 KiB request on stream A cannot take B's block, the raw allocation fails, the cache is
  // emptied and the retry succeeds.
  void* r = a.allocate(2048, 0, kStreamA);
  EXPECT_NE(r, nullptr);
  EXPECT_EQ(a.stats(0).oom_retries, 1u);
  EXPECT_EQ(a.stats(0).cached, 0u);
  // Nothing left to free: the error says what happened and what to do.
  try {
    (void)a.allocate(4096, 0, kStreamA);
    FAIL() << "expected zt::CudaError";
  } catch (const zt::CudaError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("out of memory on cuda:0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bytes in use"), std::string::npos) << msg;
  }
  a.deallocate(p);
  a.deallocate(r);
}

TEST(CudaAllocator, DeviceTensorWithoutGpuThrows) {
  if (zt::cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present: " << zt::cuda::device_summary();
  // CPU-only build: "built without CUDA"; CUDA build without a GPU: a CudaError from the runtime.
  EXPECT_THROW(zt::Tensor::empty({16}, zt::DType::f32, zt::Device::cuda()), zt::Error);
  EXPECT_EQ(zt::cuda::allocator_stats(0).in_use, 0u);
}

TEST(CudaAllocator, TensorsComeFromTheCache) {
  SKIP_WITHOUT_GPU();
  zt::cuda::empty_cache();
  const auto before = zt::cuda::allocator_stats(0);
  for (int step = 0; step < 10; ++step) {
    zt::Tensor a = zt::Tensor::empty({1000, 1000}, zt::DType::f32, zt::Device::cuda());
    zt::Tensor b = zt::Tensor::empty({333}, zt::DType::bf16, zt::Device::cuda());
    EXPECT_EQ(zt::cuda::allocator_stats(0).in_use - before.in_use,
              CachingAllocator::size_class(4000000) + CachingAllocator::size_class(666));
  }
  const auto after = zt::cuda::allocator_stats(0);
  EXPECT_EQ(after.raw_allocs - before.raw_allocs, 2u) << "steady state must not cudaMalloc";
  EXPECT_EQ(after.in_use, before.in_use);
  EXPECT_GE(after.cached, CachingAllocator::size_class(4000000));
  zt::cuda::empty_cache();
  EXPECT_EQ(zt::cuda::allocator_stats(0).cached, 0u);
}

TEST(CudaStream, EventsOrderAndTime) {
  SKIP_WITHOUT_GPU();
  zt::cuda::Stream s = zt::cuda::Stream::create(0);
  EXPECT_NE(s.handle(), nullptr);
  zt::cuda::Event start(true), end(true);
  zt::Tensor x;
  {
    zt::cuda::StreamGuard g(s);
    EXPECT_EQ(zt::cuda::current_stream(), s.handle());
    x = zt::Tensor::empty({1 << 20}, zt::DType::f32, zt::Device::cuda());
    start.record(s);
    zt::ops::fill(x, 2.f);
    zt::ops::scale(x, 0.5f);
    end.record(s);
  }
  EXPECT_EQ(zt::cuda::current_stream(), nullptr);
  end.synchronize();
  EXPECT_TRUE(end.query());
  EXPECT_TRUE(s.query());
  EXPECT_GE(zt::cuda::Event::elapsed_ms(start, end), 0.f);
  // Another stream waits for the first without a host sync.
  zt::cuda::Stream t = zt::cuda::Stream::create(0);
  t.wait(end);
  t.synchronize();
  zt::Tensor h = zt::Tensor::empty({1 << 20});
  zt::ops::copy(x, h);
  EXPECT_EQ(h.to_vector()[12345], 1.f);
  zt::cuda::Stream moved = std::move(s);
  EXPECT_EQ(s.handle(), nullptr);
  EXPECT_NE(moved.handle(), nullptr);
}

}  // namespace
