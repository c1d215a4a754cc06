// comm/make_communicator.cpp: `comm.backend: auto|nccl|mpi` at run time. Every rank's host and
// GPU identity is gathered over MPI_COMM_WORLD, so that comm/backend.h's pure decision sees the
// whole job and every rank reaches the same answer (a refused nccl request fails on every rank,
// never on some while others wait in NCCL's initialisation).
#include "comm/backend.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/detail/cuda_rt.h"
#include "comm/detail/mpi_check.h"
#include "comm/detail/rank_devices.h"
#include "core/cuda/device.h"
#include "core/error.h"

#include <string>
#include <vector>

namespace zt::comm {
namespace detail {

std::vector<RankDevice> gather_rank_devices(int device) {
  const Topology& topo = Bootstrap::instance().topology();
  const std::string gpu = device >= 0 ? detail::gpu_identity(device) : "";
  // One string per rank, "host\ngpu", gathered with their lengths.
  const std::string mine = topo.hostname + "\n" + gpu;
  const int len = static_cast<int>(mine.size());
  std::vector<int> lens(static_cast<size_t>(topo.world)), displs(lens.size());
  ZT_MPI_CHECK(MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD));
  int total = 0;
  for (size_t r = 0; r < lens.size(); ++r) {
    displs[r] = total;
    total += lens[r];
  }
  std::string all(static_cast<size_t>(total), '\0');
  ZT_MPI_CHECK(MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(),
                              MPI_CHAR, MPI_COMM_WORLD));
  std::vector<RankDevice> out(lens.size());
  for (size_t r = 0; r < lens.size(); ++r) {
    const std::string s = all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(lens[r]));
    const size_t cut = s.find('\n');
    out[r].host = s.substr(0, cut);
    out[r].gpu = cut == std::string::npos ? "" : s.substr(cut + 1);
  }
  return out;
}

}  // namespace detail

int local_rank_device() {
  const int n = cuda::device_count();
  if (n <= 0) return -1;
  return Bootstrap::instance().topology().local_rank % n;
}

std::unique_ptr<Communicator> make_communicator(Backend requested, bool device_tensors,
                                                const CommOptions& options, std::string* reason) {
  BackendDecision d;
  if (requested == Backend::mpi) {
    d = choose_backend(requested, device_tensors, ZT_WITH_CUDA != 0, {});
  } else {
    const int device = options.device >= 0 ? options.device : local_rank_device();
    d = choose_backend(requested, device_tensors, ZT_WITH_CUDA != 0,
                       detail::gather_rank_devices(device));
  }
  if (reason) *reason = d.reason;
  if (d.backend == Backend::nccl) return make_nccl_communicator(options);
  return make_mpi_communicator(options);
}

}  // namespace zt::comm
