// tests/comm/test_make_communicator.cpp: make_communicator (comm/communicator.h) under MPI on a
// machine without a GPU (or in a CPU-only build): the ranks' identities are gathered over MPI and
// every rank reaches the same decision: mpi for host tensors and for auto, a ConfigError on every
// rank for nccl, naming why. (With a GPU, tests/comm/test_mpi_device.cpp checks the GPU cases.)
#include "comm/backend.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "core/cuda/device.h"
#include "core/error.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace zt::comm {
namespace {

TEST(MakeCommunicator, HostTensorsGetMpi) {
  for (Backend b : {Backend::auto_select, Backend::mpi}) {
    std::string reason;
    std::unique_ptr<Communicator> c = make_communicator(b, false, {}, &reason);
    EXPECT_EQ(c->backend(), "mpi") << reason;
    EXPECT_EQ(c->world(), Bootstrap::instance().topology().world);
    c->barrier();
  }
}

TEST(MakeCommunicator, NcclWithoutGpuIsRefusedOnEveryRank) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a GPU is present (test_mpi_device covers it)";
  // Device tensors requested, but no rank has a GPU: auto falls back to mpi, nccl is refused.
  std::string reason;
  std::unique_ptr<Communicator> c = make_communicator(Backend::auto_select, true, {}, &reason);
  EXPECT_EQ(c->backend(), "mpi");
  EXPECT_NE(
      reason.find(ZT_WITH_CUDA ? "no GPU: NCCL needs one GPU per rank" : "built without CUDA"),
      std::string::npos)
      << reason;
  try {
    make_communicator(Backend::nccl, true);
    ADD_FAILURE() << "comm.backend: nccl without a GPU did not throw";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("config key `comm.backend`: nccl: "), std::string::npos) << m;
    // "rank 0 (host h) has no GPU" or "ranks 0 and 1 (host h) have no GPU" ...
    EXPECT_NE(m.find(ZT_WITH_CUDA ? " 0" : "built without CUDA"), std::string::npos) << m;
    if (ZT_WITH_CUDA) {
      EXPECT_NE(m.find(Bootstrap::instance().topology().hostname + ")"), std::string::npos) << m;
    }
    EXPECT_NE(m.find("comm.backend: mpi"), std::string::npos) << m;
  }
  c->barrier();  // every rank threw alike and is still in step
}

}  // namespace
}  // namespace zt::comm
