// core/cuda/check.h: the checking macros every CUDA runtime, cuBLAS and cuBLASLt call goes through
// (CONVENTIONS.md 7): one thin macro per library, one [[noreturn]] helper that throws zt::CudaError.
//
//   ZT_CUDA_CHECK(cudaMalloc(&p, bytes));   // throws zt::CudaError on failure
//   ZT_CUDA_CHECK_LAST();                    // after a kernel launch: launch-configuration errors
//   ZT_CUDA_CHECK_WARN(cudaFree(p));         // destructors: log to stderr, never throw
//
// The message names file:line, the statement as written and the runtime's own error name and
// string, e.g.
//   core/cuda/device.cu:71: cudaMalloc(&p, bytes) failed: cudaErrorMemoryAllocation (2): out of
//   memory
// Before throwing, the error is cleared with cudaGetLastError() so that a caller who catches it and
// carries on does not see it again at the next launch. (Sticky errors, such as an illegal address
// in a kernel, cannot be cleared: the context is dead and every later call reports them too.)
//
// cuBLAS and cuBLASLt share cublasStatus_t; their macros differ only in the library named:
//   ZT_CUBLAS_CHECK(cublasCreate(&h));
//   ZT_CUBLASLT_CHECK(cublasLtMatmul(...));
//   -> core/cuda/blas.cpp:88: cublasLtMatmul(...) failed: cuBLASLt CUBLAS_STATUS_NOT_SUPPORTED (15):
//      the functionality requested is not supported
// (cuDNN and NCCL get theirs with their first users: attention and comm/nccl.)
//
// This header includes cuda_runtime.h: include it only from .cu files and other CUDA-only sources,
// never from a public header (core/cuda/device.h is the public face).
#pragma once

#include "core/error.h"

#include <cublas_api.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

namespace zt::cuda::detail {

inline std::string cuda_error_message(cudaError_t err, const char* stmt, const char* file,
                                      int line) {
  return ::zt::detail::str_cat(file, ":", line, ": ", stmt, " failed: ", cudaGetErrorName(err),
                               " (", static_cast<int>(err), "): ", cudaGetErrorString(err));
}

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* stmt, const char* file,
                                          int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so that it is reported once
  throw ::zt::CudaError(cuda_error_message(err, stmt, file, line));
}

inline void warn_cuda_error(cudaError_t err, const char* stmt, const char* file, int line) {
  (void)cudaGetLastError();
  std::fprintf(stderr, "zerotrain: warning: %s\n",
               cuda_error_message(err, stmt, file, line).c_str());
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t st, const char* lib, const char* stmt,
                                            const char* file, int line) {
  throw ::zt::CudaError(::zt::detail::str_cat(file, ":", line, ": ", stmt, " failed: ", lib, " ",
                                              cublasGetStatusName(st), " (", static_cast<int>(st),
                                              "): ", cublasGetStatusString(st)));
}

}  // namespace zt::cuda::detail

#define ZT_CUDA_CHECK(stmt)                                                          \
  do {                                                                               \
    const cudaError_t zt_cuda_err_ = (stmt);                                         \
    if (zt_cuda_err_ != cudaSuccess)                                                 \
      ::zt::cuda::detail::throw_cuda_error(zt_cuda_err_, #stmt, __FILE__, __LINE__); \
  } while (0)

#define ZT_CUDA_CHECK_WARN(stmt)                                                    \
  do {                                                                              \
    const cudaError_t zt_cuda_err_ = (stmt);                                        \
    if (zt_cuda_err_ != cudaSuccess)                                                \
      ::zt::cuda::detail::warn_cuda_error(zt_cuda_err_, #stmt, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports a bad launch configuration (or an earlier sticky error).
#define ZT_CUDA_CHECK_LAST() ZT_CUDA_CHECK(cudaGetLastError())

#define ZT_CUBLAS_CHECK_AS_(lib, stmt)                                                         \
  do {                                                                                          \
    const cublasStatus_t zt_cublas_st_ = (stmt);                                                \
    if (zt_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::zt::cuda::detail::throw_cublas_error(zt_cublas_st_, lib, #stmt, __FILE__, __LINE__);    \
  } while (0)
#define ZT_CUBLAS_CHECK(stmt) ZT_CUBLAS_CHECK_AS_("cuBLAS", stmt)
#define ZT_CUBLASLT_CHECK(stmt) ZT_CUBLAS_CHECK_AS_("cuBLASLt", stmt)

namespace zt::cuda {
// Makes `device` the calling thread's current GPU for a scope and restores the previous one
// (cudaSetDevice only when it differs: cheap, but not free). Used by core/cuda and comm/.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    ZT_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) ZT_CUDA_CHECK(cudaSetDevice(device));
    changed_ = prev_ != device;
  }
  ~DeviceScope() {
    if (changed_) ZT_CUDA_CHECK_WARN(cudaSetDevice(prev_));
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};
}  // namespace zt::cuda
