// core/cuda/runtime.cpp: the CUDA build's streams, events (core/cuda/stream.h) and the process's
// caching allocator on cudaMalloc/cudaFree (core/cuda/allocator.h). Host code only: a .cpp that
// includes cuda_runtime.h, compiled by the host compiler (faster than nvcc, same warnings).
//
// Status: compiled, never run on a GPU (no session so far had one). The caching logic itself is
// unit-tested on the host (tests/gpu/test_cuda_allocator.cpp); the cudaMalloc path is not.
#include <cuda_runtime.h>

#include <utility>

#include "core/cuda/allocator.h"
#include "core/cuda/check.h"
#include "core/cuda/stream.h"

namespace zt::cuda {

// ---- streams and events -------------------------------------------------------------------------
namespace {
thread_local cudaStream_t t_current = nullptr;

}  // namespace

Stream Stream::create(int device, bool non_blocking, int priority) {
  DeviceScope scope(device);
  cudaStream_t s = nullptr;
  ZT_CUDA_CHECK(cudaStreamCreateWithPriority(
      &s, non_blocking ? cudaStreamNonBlocking : cudaStreamDefault, priority));
  return Stream(s, device, true);
}

Stream::~Stream() {
  if (owned_ && handle_) ZT_CUDA_CHECK_WARN(cudaStreamDestroy(handle_));
}
Stream::Stream(Stream&& o) noexcept
    : handle_(std::exchange(o.handle_, nullptr)), device_(o.device_),
      owned_(std::exchange(o.owned_, false)) {}
Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    if (owned_ && handle_) ZT_CUDA_CHECK_WARN(cudaStreamDestroy(handle_));
    handle_ = std::exchange(o.handle_, nullptr);
    device_ = o.device_;
    owned_ = std::exchange(o.owned_, false);
  }
  return *this;
}
void Stream::synchronize() const { ZT_CUDA_CHECK(cudaStreamSynchronize(handle_)); }
bool Stream::query() const {
  const cudaError_t err = cudaStreamQuery(handle_);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  ZT_CUDA_CHECK(err);
  return true;
}
void Stream::wait(const Event& e) const {
  ZT_CUDA_CHECK(cudaStreamWaitEvent(handle_, e.handle(), 0));
}

Event::Event(bool timing) {
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&handle_, timing ? cudaEventDefault
                                                          : cudaEventDisableTiming));
}
Event::~Event() {
  if (handle_) ZT_CUDA_CHECK_WARN(cudaEventDestroy(handle_));
}
Event::Event(Event&& o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (handle_) ZT_CUDA_CHECK_WARN(cudaEventDestroy(handle_));
    handle_ = std::exchange(o.handle_, nullptr);
  }
  return *this;
}
void Event::record(const Stream& s) { ZT_CUDA_CHECK(cudaEventRecord(handle_, s.handle())); }
void Event::synchronize() const { ZT_CUDA_CHECK(cudaEventSynchronize(handle_)); }
bool Event::query() const {
  const cudaError_t err = cudaEventQuery(handle_);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  ZT_CUDA_CHECK(err);
  return true;
}
float Event::elapsed_ms(const Event& start, const Event& end) {
  float ms = 0.f;
  ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, start.handle(), end.handle()));
  return ms;
}

CUstream_st* current_stream() { return t_current; }

StreamGuard::StreamGuard(const Stream& s) : prev_stream_(t_current), prev_device_(0) {
  ZT_CUDA_CHECK(cudaGetDevice(&prev_device_));
  if (prev_device_ != s.device()) ZT_CUDA_CHECK(cudaSetDevice(s.device()));
  t_current = s.handle();
}
StreamGuard::~StreamGuard() {
  t_current = prev_stream_;
  ZT_CUDA_CHECK_WARN(cudaSetDevice(prev_device_));
}

// ---- the caching allocator on cudaMalloc --------------------------------------------------------
namespace {
class CudaRawAllocator final : public RawAllocator {
 public:
  void* raw_alloc(size_t bytes, int device) override {
    DeviceScope scope(device);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // out of memory is not sticky: the caller empties the cache
      return nullptr;
    }
    ZT_CUDA_CHECK(err);
    return p;
  }
  void raw_free(void* ptr, int device) noexcept override {
    // cudaFree needs no current-device switch (it finds the pointer's device) and synchronises.
    (void)device;
    ZT_CUDA_CHECK_WARN(cudaFree(ptr));
  }
};

// Never destroyed: at exit the driver reclaims device memory, and a static destructor calling
// cudaFree after the runtime has shut down would fail.
CachingAllocator& allocator() {
  static CudaRawAllocator* raw = new CudaRawAllocator();
  static CachingAllocator* a = new CachingAllocator(*raw);
  return *a;
}
}  // namespace

void* device_alloc(size_t bytes, int device) {
  return allocator().allocate(bytes, device, current_stream());
}
void device_free(void* ptr) noexcept { allocator().deallocate(ptr); }
AllocatorStats allocator_stats(int device) { return allocator().stats(device); }
void reset_peak_memory(int device) { allocator().reset_peak(device); }
void empty_cache() { allocator().empty_cache(); }

}  // namespace zt::cuda
