// core/cuda/allocator.h: device memory for tensors, through the process's caching allocator
// (design in core/cuda/caching_allocator.h). core/allocator.cpp routes Device::cuda allocations
// here, so `Tensor::empty(shape, dtype, Device::cuda())` never calls cudaMalloc once warmed up.
// No CUDA header (public). CPU-only build: allocation throws "built without CUDA"; stats are zero.
#pragma once

#include <cstddef>

#include "core/cuda/caching_allocator.h"

namespace zt::cuda {

// Allocates on `device` for use on the current stream (current_stream() in core/cuda/stream.h).
void* device_alloc(size_t bytes, int device);
void device_free(void* ptr) noexcept;

AllocatorStats allocator_stats(int device = 0);
void reset_peak_memory(int device = 0);
// Hands every cached (free) block back to the driver (cudaFree); blocks in use are kept.
void empty_cache();

}  // namespace zt::cuda
