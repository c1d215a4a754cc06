// tests/comm/test_backend.cpp: comm.backend's decision (comm/backend.h), every case, on the CPU:
// auto picks nccl only for CUDA tensors with one GPU per rank; a refused nccl request is a
// ConfigError that names the key, the ranks and the GPU, and says what to set instead. Also: the
// CPU-only build's make_nccl_communicator says "built without CUDA".
#include "comm/backend.h"
#include "comm/communicator.h"
#include "core/error.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace zt::comm {
namespace {

// The ConfigError message of `f`, or "" when it does not throw one.
template <typename F>
std::string config_error_of(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

const std::vector<RankDevice> kOwnGpus = {{"node0", "GPU-aaaa (PCI 0000:19:00.0)"},
                                          {"node0", "GPU-bbbb (PCI 0000:3b:00.0)"},
                                          {"node1", "GPU-cccc (PCI 0000:19:00.0)"}};
const std::vector<RankDevice> kSharedGpu = {{"node0", "GPU-aaaa (PCI 0000:19:00.0)"},
                                            {"node0", "GPU-aaaa (PCI 0000:19:00.0)"}};
const std::vector<RankDevice> kOneWithout = {{"node0", "GPU-aaaa (PCI 0000:19:00.0)"},
                                             {"node1", ""}};

TEST(BackendChoice, Names) {
  EXPECT_EQ(parse_backend("auto"), Backend::auto_select);
  EXPECT_EQ(parse_backend("nccl"), Backend::nccl);
  EXPECT_EQ(parse_backend("mpi"), Backend::mpi);
  EXPECT_STREQ(backend_name(Backend::auto_select), "auto");
  EXPECT_STREQ(backend_name(Backend::nccl), "nccl");
  EXPECT_STREQ(backend_name(Backend::mpi), "mpi");
  const std::string e = config_error_of([] { parse_backend("gloo"); });
  EXPECT_NE(e.find("comm.backend"), std::string::npos) << e;
  EXPECT_NE(e.find("'gloo'"), std::string::npos) << e;
  EXPECT_NE(e.find("auto, nccl or mpi"), std::string::npos) << e;
}

TEST(BackendChoice, MpiIsAlwaysGranted) {
  for (bool dev : {false, true})
    for (bool cuda : {false, true})
      for (const auto* ranks : {&kOwnGpus, &kSharedGpu, &kOneWithout}) {
        BackendDecision d = choose_backend(Backend::mpi, dev, cuda, *ranks);
        EXPECT_EQ(d.backend, Backend::mpi);
        EXPECT_EQ(d.reason.find("staged") != std::string::npos, dev) << d.reason;
      }
}

TEST(BackendChoice, AutoPicksNcclForCudaTensorsOnOwnGpus) {
  BackendDecision d = choose_backend(Backend::auto_select, true, true, kOwnGpus);
  EXPECT_EQ(d.backend, Backend::nccl);
  EXPECT_NE(d.reason.find("auto -> nccl"), std::string::npos) << d.reason;
  // One rank with its GPU is fine too.
  EXPECT_EQ(choose_backend(Backend::auto_select, true, true, {kOwnGpus[0]}).backend, Backend::nccl);
}

TEST(BackendChoice, AutoFallsBackToMpiAndSaysWhy) {
  BackendDecision host = choose_backend(Backend::auto_select, false, true, kOwnGpus);
  EXPECT_EQ(host.backend, Backend::mpi);
  EXPECT_NE(host.reason.find("tensors on the CPU"), std::string::npos) << host.reason;

  BackendDecision cpu_build = choose_backend(Backend::auto_select, true, false, kOwnGpus);
  EXPECT_EQ(cpu_build.backend, Backend::mpi);
  EXPECT_NE(cpu_build.reason.find("built without CUDA"), std::string::npos) << cpu_build.reason;

  BackendDecision shared = choose_backend(Backend::auto_select, true, true, kSharedGpu);
  EXPECT_EQ(shared.backend, Backend::mpi);
  EXPECT_NE(shared.reason.find("ranks 0 and 1 share GPU GPU-aaaa"), std::string::npos)
      << shared.reason;
  EXPECT_NE(shared.reason.find("NCCL refuses two ranks on one GPU"), std::string::npos)
      << shared.reason;

  BackendDecision without = choose_backend(Backend::auto_select, true, true, kOneWithout);
  EXPECT_EQ(without.backend, Backend::mpi);
  EXPECT_NE(without.reason.find("rank 1 (host node1) has no GPU"), std::string::npos)
      << without.reason;
}

TEST(BackendChoice, NcclGrantedWithOneGpuPerRank) {
  BackendDecision d = choose_backend(Backend::nccl, true, true, kOwnGpus);
  EXPECT_EQ(d.backend, Backend::nccl);
  EXPECT_EQ(d.reason, "comm.backend: nccl (one GPU per rank)");
}

TEST(BackendChoice, NcclOnSharedGpuNamesRanksAndGpu) {
  const std::string e =
      config_error_of([] { choose_backend(Backend::nccl, true, true, kSharedGpu); });
  EXPECT_EQ(e,
            "config key `comm.backend`: nccl: ranks 0 and 1 share GPU GPU-aaaa (PCI "
            "0000:19:00.0) on host node0: NCCL refuses two ranks on one GPU; use comm.backend: "
            "mpi");
  // Three ranks, two of them on one GPU, listed in rank order.
  std::vector<RankDevice> three = {{"h", "GPU-1"}, {"h", "GPU-2"}, {"h", "GPU-1"}, {"h", "GPU-1"}};
  const std::string e3 = config_error_of([&] { choose_backend(Backend::nccl, true, true, three); });
  EXPECT_NE(e3.find("ranks 0, 2 and 3 share GPU GPU-1 on host h"), std::string::npos) << e3;
}

TEST(BackendChoice, RanksWithoutGpuAreListedWithTheirHosts) {
  std::vector<RankDevice> r = {{"a", ""}, {"a", "GPU-1"}, {"a", ""}, {"b", ""}};
  const std::string e = config_error_of([&] { choose_backend(Backend::nccl, true, true, r); });
  EXPECT_NE(e.find("ranks 0, 2 and 3 (hosts a, b) have no GPU"), std::string::npos) << e;
}

TEST(BackendChoice, NcclWithoutGpuOnSomeRank) {
  const std::string e =
      config_error_of([] { choose_backend(Backend::nccl, true, true, kOneWithout); });
  EXPECT_NE(e.find("config key `comm.backend`: nccl: rank 1 (host node1) has no GPU"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("use comm.backend: mpi"), std::string::npos) << e;
}

TEST(BackendChoice, NcclOnCpuTensorsOrCpuBuild) {
  const std::string host =
      config_error_of([] { choose_backend(Backend::nccl, false, true, kOwnGpus); });
  EXPECT_EQ(host,
            "config key `comm.backend`: nccl: NCCL works on GPU memory but the tensors are on the "
            "CPU: set device: cuda, or use comm.backend: mpi");
  const std::string build =
      config_error_of([] { choose_backend(Backend::nccl, true, false, kOwnGpus); });
  EXPECT_EQ(build,
            "config key `comm.backend`: nccl: built without CUDA: rebuild with -DZT_CUDA=ON, or "
            "use comm.backend: mpi");
}

#if !ZT_WITH_CUDA
TEST(BackendChoice, CpuOnlyBuildHasNoNcclBackend) {
  try {
    make_nccl_communicator();
    ADD_FAILURE() << "make_nccl_communicator did not throw in a CPU-only build";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("built without CUDA"), std::string::npos) << e.what();
  }
}
#endif

}  // namespace
}  // namespace zt::comm
