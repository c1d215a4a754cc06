// comm/backend.cpp: the backend decision of comm/backend.h (pure: no MPI, no CUDA).
#include "comm/backend.h"

#include "core/error.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace zt::comm {
namespace {

// "rank 3", "ranks 0 and 1", "ranks 0, 1 and 5".
std::string rank_list(const std::vector<int>& r) {
  std::string s = r.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < r.size(); ++i) {
    if (i > 0) s += (i + 1 == r.size()) ? " and " : ", ";
    s += std::to_string(r[i]);
  }
  return s;
}

// Why NCCL cannot run over these ranks, or "" when it can.
std::string nccl_obstacle(const std::vector<RankDevice>& ranks) {
  std::vector<int> without;
  for (size_t r = 0; r < ranks.size(); ++r)
    if (ranks[r].gpu.empty()) without.push_back(static_cast<int>(r));
  if (!without.empty()) {
    std::vector<std::string> hosts;  // in rank order, each once
    for (int r : without)
      if (std::find(hosts.begin(), hosts.end(), ranks[r].host) == hosts.end())
        hosts.push_back(ranks[r].host);
    std::string where = hosts.size() == 1 ? "host " : "hosts ";
    for (size_t i = 0; i < hosts.size(); ++i) where += (i ? ", " : "") + hosts[i];
    return zt::detail::str_cat(rank_list(without), " (", where, ")",
                               without.size() == 1 ? " has" : " have",
                               " no GPU: NCCL needs one GPU per rank");
  }
  // The first GPU (in rank order) that more than one rank would use.
  std::map<std::string, std::vector<int>> users;
  for (size_t r = 0; r < ranks.size(); ++r) users[ranks[r].gpu].push_back(static_cast<int>(r));
  for (size_t r = 0; r < ranks.size(); ++r) {
    const std::vector<int>& u = users[ranks[r].gpu];
    if (u.size() > 1)
      return zt::detail::str_cat(rank_list(u), " share GPU ", ranks[r].gpu, " on host ",
                                 ranks[r].host, ": NCCL refuses two ranks on one GPU");
  }
  return "";
}

}  // namespace

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::auto_select:
      return "auto";
    case Backend::nccl:
      return "nccl";
    case Backend::mpi:
      return "mpi";
  }
  return "?";
}

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::auto_select;
  if (name == "nccl") return Backend::nccl;
  if (name == "mpi") return Backend::mpi;
  throw ConfigError(zt::detail::str_cat("config key `comm.backend`: unknown backend '", name,
                                        "': expected auto, nccl or mpi"));
}

BackendDecision choose_backend(Backend requested, bool device_tensors, bool built_with_cuda,
                               const std::vector<RankDevice>& ranks) {
  if (requested == Backend::mpi)
    return {Backend::mpi, device_tensors ? "comm.backend: mpi (device buffers staged through "
                                           "pinned host memory)"
                                         : "comm.backend: mpi"};
  const bool want_nccl = requested == Backend::nccl;
  auto refuse = [](const std::string& why) -> BackendDecision {
    throw ConfigError(zt::detail::str_cat("config key `comm.backend`: nccl: ", why));
  };
  if (!built_with_cuda) {
    const char* why = "built without CUDA: rebuild with -DZT_CUDA=ON, or use comm.backend: mpi";
    if (want_nccl) return refuse(why);
    return {Backend::mpi, "comm.backend: auto -> mpi (built without CUDA)"};
  }
  if (!device_tensors) {
    if (want_nccl)
      return refuse(
          "NCCL works on GPU memory but the tensors are on the CPU: set device: cuda, or "
          "use comm.backend: mpi");
    return {Backend::mpi, "comm.backend: auto -> mpi (tensors on the CPU)"};
  }
  const std::string obstacle = nccl_obstacle(ranks);
  if (!obstacle.empty()) {
    if (want_nccl) return refuse(obstacle + "; use comm.backend: mpi");
    return {Backend::mpi, "comm.backend: auto -> mpi (" + obstacle +
                              "; device buffers staged through pinned host memory)"};
  }
  return {Backend::nccl, want_nccl ? "comm.backend: nccl (one GPU per rank)"
                                   : "comm.backend: auto -> nccl (CUDA tensors, one GPU per rank)"};
}

}  // namespace zt::comm
