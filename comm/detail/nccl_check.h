// comm/detail/nccl_check.h: the checking macros of NCCL calls (CONVENTIONS 7), and a scope that
// makes a GPU current. CUDA builds only (includes nccl.h and cuda_runtime.h): comm/detail/ is
// folder-private, and only comm/nccl_communicator.cpp includes this.
//
//   ZT_NCCL_CHECK(comm, ncclAllReduce(...));   // throws zt::CommError
//   ZT_NCCL_CHECK_WARN(comm, ncclCommDestroy(c)); // destructors: log to stderr
// The message names file:line, the call as written, ncclGetErrorString of the result and
// ncclGetLastError (NCCL's own detail, e.g. which rank mismatched); the caller adds the op, its
// sequence number and the rank (comm/nccl_communicator.cpp's submit).
#pragma once

#include "core/cuda/check.h"
#include "core/error.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <string>

namespace zt::comm::detail {

inline std::string nccl_error_message(ncclResult_t r, ncclComm_t comm, const char* call,
                                      const char* file, int line) {
  const char* last = ncclGetLastError(comm);
  return ::zt::detail::str_cat(file, ":", line, ": ", call, " failed: NCCL error ",
                               static_cast<int>(r), " (", ncclGetErrorString(r), ")",
                               (last != nullptr && *last != '\0') ? ": " : "",
                               last != nullptr ? last : "");
}

[[noreturn]] inline void throw_nccl_error(ncclResult_t r, ncclComm_t comm, const char* call,
                                          const char* file, int line) {
  throw ::zt::CommError(nccl_error_message(r, comm, call, file, line));
}

inline void warn_nccl_error(ncclResult_t r, ncclComm_t comm, const char* call, const char* file,
                            int line) {
  std::fprintf(stderr, "zerotrain: warning: %s\n",
               nccl_error_message(r, comm, call, file, line).c_str());
}

// DeviceScope (a GPU made current for a scope): core/cuda/check.h's, shared with core/cuda.
using ::zt::cuda::DeviceScope;

}  // namespace zt::comm::detail

#define ZT_NCCL_CHECK(handle, call)                                                           \
  do {                                                                                        \
    const ncclResult_t zt_nccl_rc_ = (call);                                                  \
    if (zt_nccl_rc_ != ncclSuccess)                                                           \
      ::zt::comm::detail::throw_nccl_error(zt_nccl_rc_, (handle), #call, __FILE__, __LINE__); \
  } while (0)

#define ZT_NCCL_CHECK_WARN(handle, call)                                                     \
  do {                                                                                       \
    const ncclResult_t zt_nccl_rc_ = (call);                                                 \
    if (zt_nccl_rc_ != ncclSuccess)                                                          \
      ::zt::comm::detail::warn_nccl_error(zt_nccl_rc_, (handle), #call, __FILE__, __LINE__); \
  } while (0)
