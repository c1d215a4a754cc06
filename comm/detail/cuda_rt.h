// comm/detail/cuda_rt.h: the few CUDA runtime services comm/ needs, behind a header without CUDA
// types (so that mpi_communicator.cpp and make_communicator.cpp stay plain C++ in both builds).
//
// Implementations: comm/detail/cuda_rt.cpp (CUDA build, links CUDA::cudart PRIVATE) and
// comm/detail/cuda_rt_stub.cpp (CPU-only build: no GPU, and every staging call throws "built
// without CUDA", which cannot happen since no device tensor exists there).
//
// Status: compiled for CUDA 13, never run on a GPU (see comm/communicator.h).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace zt::comm::detail {

// The identity of GPU `device` as this process sees it: "GPU-<uuid> (PCI 0000:19:00.0)". The UUID
// is unique across machines, so two ranks that print the same string share one GPU. "" when
// there is no such device (or no GPU, or a CPU-only build). Never throws (its callers are about to
// enter a collective: one rank throwing would leave the others waiting).
std::string gpu_identity(int device);

// A point in the calling thread's current stream (core/cuda/stream.h) on `device`, recorded at
// construction: the comm thread waits for it before reading a device buffer, so that the copy
// comes after the kernels that produced the data (no host synchronisation on the caller's side).
class StreamFence {
 public:
  explicit StreamFence(int device);
  ~StreamFence();
  StreamFence(const StreamFence&) = delete;
  StreamFence& operator=(const StreamFence&) = delete;
  void host_wait();  // blocks until the work before the fence has run (cudaEventSynchronize)

 private:
  void* event_ = nullptr;  // cudaEvent_t
  int device_ = 0;
};

// Synchronous copies on the calling thread's private copy stream for `device` (a non-blocking
// stream per thread and device, so the comm thread's copies never wait for unrelated compute on
// the legacy default stream). 2-D: `rows` rows of `width` bytes, `*pitch` bytes apart.
void copy_d2h(void* host, const void* dev, size_t bytes, int device);
void copy_h2d(void* dev, const void* host, size_t bytes, int device);
void copy_d2h_2d(void* host, size_t host_pitch, const void* dev, size_t dev_pitch, size_t width,
                 size_t rows, int device);
void copy_h2d_2d(void* dev, size_t dev_pitch, const void* host, size_t host_pitch, size_t width,
                 size_t rows, int device);

// Page-locks [p, p + bytes) for fast DMA (cudaHostRegister); false (with the reason in *why) when
// the runtime refuses, e.g. under a low `ulimit -l`: copies then stay correct, only slower.
bool pin_host(void* p, size_t bytes, std::string* why);
void unpin_host(void* p) noexcept;

}  // namespace zt::comm::detail
