// comm/detail/cuda_rt.cpp: the CUDA build's runtime services for comm/ (comm/detail/cuda_rt.h).
// Host code only (a .cpp including cuda_runtime.h). Every call is checked (core/cuda/check.h).
//
// Status: compiled for CUDA 13, never run on a GPU.
#include "comm/detail/cuda_rt.h"

#include "comm/detail/nccl_check.h"  // DeviceScope
#include "core/cuda/check.h"
#include "core/cuda/stream.h"
#include "core/error.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <map>

namespace zt::comm::detail {
namespace {

// The calling thread's copy streams, one per device, destroyed when the thread ends.
struct CopyStreams {
  std::map<int, cudaStream_t> by_device;
  ~CopyStreams() {
    // At process exit the runtime may already be unloading: nothing to report then.
    for (auto& [dev, s] : by_device) {
      (void)dev;
      const cudaError_t rc = cudaStreamDestroy(s);
      if (rc != cudaSuccess && rc != cudaErrorCudartUnloading)
        ZT_CUDA_CHECK_WARN(rc);
      else
        (void)cudaGetLastError();
    }
  }
};

cudaStream_t copy_stream(int device) {
  thread_local CopyStreams streams;
  auto it = streams.by_device.find(device);
  if (it != streams.by_device.end()) return it->second;
  cudaStream_t s = nullptr;
  ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  streams.by_device.emplace(device, s);
  return s;
}

}  // namespace

std::string gpu_identity(int device) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: "no GPU" (CONVENTIONS 10)
    return "";
  }
  if (device < 0 || device >= n) return "";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
    (void)cudaGetLastError();  // never throw here: the caller is about to enter a collective
    return "";
  }
  char uuid[64];
  const auto* u = reinterpret_cast<const unsigned char*>(p.uuid.bytes);
  std::snprintf(uuid, sizeof uuid,
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                u[14], u[15]);
  char pci[32];
  std::snprintf(pci, sizeof pci, "%04x:%02x:%02x.0", p.pciDomainID, p.pciBusID, p.pciDeviceID);
  return zt::detail::str_cat(uuid, " (PCI ", pci, ")");
}

StreamFence::StreamFence(int device) : device_(device) {
  DeviceScope scope(device);
  cudaEvent_t e = nullptr;
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  const cudaError_t rc = cudaEventRecord(e, cuda::current_stream());
  if (rc != cudaSuccess) {
    ZT_CUDA_CHECK_WARN(cudaEventDestroy(e));
    ZT_CUDA_CHECK(rc);
  }
  event_ = e;
}

StreamFence::~StreamFence() {
  if (event_ != nullptr) ZT_CUDA_CHECK_WARN(cudaEventDestroy(static_cast<cudaEvent_t>(event_)));
}

void StreamFence::host_wait() {
  ZT_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
}

void copy_d2h(void* host, const void* dev, size_t bytes, int device) {
  if (bytes == 0) return;
  DeviceScope scope(device);
  cudaStream_t s = copy_stream(device);
  ZT_CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, s));
  ZT_CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_h2d(void* dev, const void* host, size_t bytes, int device) {
  if (bytes == 0) return;
  DeviceScope scope(device);
  cudaStream_t s = copy_stream(device);
  ZT_CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s));
  ZT_CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_d2h_2d(void* host, size_t host_pitch, const void* dev, size_t dev_pitch, size_t width,
                 size_t rows, int device) {
  if (width == 0 || rows == 0) return;
  DeviceScope scope(device);
  cudaStream_t s = copy_stream(device);
  ZT_CUDA_CHECK(
      cudaMemcpy2DAsync(host, host_pitch, dev, dev_pitch, width, rows, cudaMemcpyDeviceToHost, s));
  ZT_CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_h2d_2d(void* dev, size_t dev_pitch, const void* host, size_t host_pitch, size_t width,
                 size_t rows, int device) {
  if (width == 0 || rows == 0) return;
  DeviceScope scope(device);
  cudaStream_t s = copy_stream(device);
  ZT_CUDA_CHECK(
      cudaMemcpy2DAsync(dev, dev_pitch, host, host_pitch, width, rows, cudaMemcpyHostToDevice, s));
  ZT_CUDA_CHECK(cudaStreamSynchronize(s));
}

bool pin_host(void* p, size_t bytes, std::string* why) {
  if (bytes == 0) return false;
  const cudaError_t rc = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
  if (rc == cudaSuccess) return true;
  (void)cudaGetLastError();  // not sticky: copies from pageable memory still work
  if (why) *why = zt::detail::str_cat(cudaGetErrorName(rc), ": ", cudaGetErrorString(rc));
  return false;
}

void unpin_host(void* p) noexcept { ZT_CUDA_CHECK_WARN(cudaHostUnregister(p)); }

}  // namespace zt::comm::detail
