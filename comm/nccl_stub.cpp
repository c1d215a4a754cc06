// comm/nccl_stub.cpp: the nccl backend in a CPU-only build (CONVENTIONS 3: a missing backend
// throws). make_communicator never picks it there (comm/backend.h); asking for it directly throws.
#include "comm/communicator.h"
#include "core/error.h"

namespace zt::comm {

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions&) {
  throw Error(
      "comm backend nccl: built without CUDA: rebuild with -DZT_CUDA=ON, or use comm.backend: mpi");
}

}  // namespace zt::comm
