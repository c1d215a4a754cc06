// core/cuda/cudnn_check.h: the checking macro every cuDNN call goes through (CONVENTIONS.md 7),
// beside core/cuda/check.h's CUDA runtime and cuBLAS ones.
//
//   ZT_CUDNN_CHECK(cudnnBackendFinalize(plan));   // throws zt::CudaError on failure
//   ZT_CUDNN_CHECK_WARN(cudnnDestroy(h));          // destructors: log to stderr, never throw
//
// The message names file:line, the statement as written, cuDNN's status string and number, and
// cuDNN 9's own explanation of its last error (cudnnGetLastErrorString; it often names the
// attribute or the engine that refused), e.g.
//   core/cuda/attention.cpp:212: cudnnBackendFinalize(heur.get()) failed: cuDNN
//   CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN (3001): <cuDNN's detail>
// Include only from CUDA-only sources (it includes cudnn.h; never from a public header).
#pragma once

#include <cudnn.h>

#include <cstdio>
#include <string>

#include "core/error.h"

namespace zt::cuda::detail {

inline std::string cudnn_error_message(cudnnStatus_t st, const char* stmt, const char* file,
                                       int line) {
  char last[1024] = {0};
  cudnnGetLastErrorString(last, sizeof last);  // cuDNN >= 9.0; empty when it has nothing
  std::string msg = ::zt::detail::str_cat(file, ":", line, ": ", stmt, " failed: cuDNN ",
                                          cudnnGetErrorString(st), " (", static_cast<int>(st),
                                          ")");
  if (last[0] != '\0') msg += ::zt::detail::str_cat(": ", last);
  return msg;
}

[[noreturn]] inline void throw_cudnn_error(cudnnStatus_t st, const char* stmt, const char* file,
                                           int line) {
  throw ::zt::CudaError(cudnn_error_message(st, stmt, file, line));
}

inline void warn_cudnn_error(cudnnStatus_t st, const char* stmt, const char* file, int line) {
  std::fprintf(stderr, "zerotrain: warning: %s\n",
               cudnn_error_message(st, stmt, file, line).c_str());
}

}  // namespace zt::cuda::detail

#define ZT_CUDNN_CHECK(stmt)                                                           \
  do {                                                                                 \
    const cudnnStatus_t zt_cudnn_st_ = (stmt);                                         \
    if (zt_cudnn_st_ != CUDNN_STATUS_SUCCESS)                                          \
      ::zt::cuda::detail::throw_cudnn_error(zt_cudnn_st_, #stmt, __FILE__, __LINE__);  \
  } while (0)

#define ZT_CUDNN_CHECK_WARN(stmt)                                                     \
  do {                                                                                \
    const cudnnStatus_t zt_cudnn_st_ = (stmt);                                        \
    if (zt_cudnn_st_ != CUDNN_STATUS_SUCCESS)                                         \
      ::zt::cuda::detail::warn_cudnn_error(zt_cudnn_st_, #stmt, __FILE__, __LINE__);  \
  } while (0)
