// comm/backend.h: which Communicator backend a job uses (`comm.backend: auto|nccl|mpi`), decided
// from facts every rank can see: the build, where the tensors live, and each rank's GPU.
//
// The rule (DESIGN.md "Backends"; torch.distributed's "nccl for CUDA tensors, gloo otherwise"):
//   auto  nccl when the tensors are on CUDA, this build has CUDA and every rank has a GPU of its
//         own; mpi otherwise (host tensors, a CPU-only build, a rank without a GPU, or two ranks on
//         one GPU: NCCL refuses two ranks on one GPU, and the mpi backend stages device buffers
//         through pinned host memory instead);
//   nccl  as auto would pick nccl, or a ConfigError saying which condition fails and what to do;
//   mpi   always (device tensors are staged).
// choose_backend() is a pure function of those facts, so that every case is unit-tested on a
// machine without a GPU (tests/comm/test_backend.cpp); make_communicator() (comm/communicator.h)
// gathers the facts with MPI and calls it, so every rank reaches the same decision.
#pragma once

#include <string>
#include <vector>

namespace zt::comm {

enum class Backend { auto_select, nccl, mpi };
const char* backend_name(Backend b);  // "auto", "nccl", "mpi"
// "auto" | "nccl" | "mpi" -> Backend; anything else throws ConfigError naming comm.backend.
Backend parse_backend(const std::string& name);

// Where one rank runs: its host and the identity of the GPU it would use ("" when it has none).
// The GPU identity must be unique across the job for distinct GPUs (its UUID; see
// local_rank_device() in comm/communicator.h), so that equal strings mean one shared GPU.
struct RankDevice {
  std::string host;
  std::string gpu;
};

struct BackendDecision {
  Backend backend = Backend::mpi;  // nccl or mpi, never auto_select
  std::string reason;              // one line for the start-up block: why this backend
};

// `ranks[r]` describes rank r. Throws ConfigError (key `comm.backend`) when nccl is requested but
// cannot run; the message names the ranks and the GPU concerned and says what to set instead.
BackendDecision choose_backend(Backend requested, bool device_tensors, bool built_with_cuda,
                               const std::vector<RankDevice>& ranks);

}  // namespace zt::comm
