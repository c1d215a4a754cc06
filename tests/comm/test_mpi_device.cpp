// tests/comm/test_mpi_device.cpp: the mpi backend on device tensors (GPU), staged through pinned
// host memory: every op, f32 and bf16, bitwise against the reference (the mpi backend reduces
// 16-bit in f32, as on the host), with default chunks and with chunks of 100 elements (staged
// piece by piece: all sizes above 100 take the chunked paths, 2-D copies included); ordering after
// the producer's stream; mixed host/device operands refused; and make_communicator's choice on
// this machine (ranks sharing one GPU get mpi, nccl is refused naming them).
// Runs with 1 and 2 ranks; on the H100 machine both ranks share its one GPU. Without a GPU on
// every rank, every test skips on every rank (device_test_util.h).
#include "comm/communicator.h"
#include "core/error.h"
#include "device_collectives.h"
#include "device_test_util.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <tuple>

namespace zt::comm::test {
namespace {

// The mpi communicators under test, created on first use (collective; every rank runs the same
// tests in the same order and skips alike).
Communicator& mpi_comm(bool chunked) {
  static std::unique_ptr<Communicator> comms[2];
  auto& c = comms[chunked ? 1 : 0];
  if (!c) {
    CommOptions o;
    if (chunked) o.chunk_elems = 100;
    c = make_mpi_communicator(o);
  }
  return *c;
}

class MpiDevice : public testing::TestWithParam<std::tuple<DType, bool>> {
 protected:
  DType dt() const { return std::get<0>(GetParam()); }
  Communicator& comm() const { return mpi_comm(std::get<1>(GetParam())); }
};

TEST_P(MpiDevice, AllReduce) {
  ZT_SKIP_WITHOUT_GPU();
  check_all_reduce(comm(), dt(), true);
}
TEST_P(MpiDevice, ReduceScatter) {
  ZT_SKIP_WITHOUT_GPU();
  check_reduce_scatter(comm(), dt(), true);
}
TEST_P(MpiDevice, ReduceScatterV) {
  ZT_SKIP_WITHOUT_GPU();
  check_reduce_scatter_v(comm(), dt(), true);
}
TEST_P(MpiDevice, AllGather) {
  ZT_SKIP_WITHOUT_GPU();
  check_all_gather(comm(), dt());
}
TEST_P(MpiDevice, AllGatherV) {
  ZT_SKIP_WITHOUT_GPU();
  check_all_gather_v(comm(), dt());
}
TEST_P(MpiDevice, Broadcast) {
  ZT_SKIP_WITHOUT_GPU();
  check_broadcast(comm(), dt());
}
TEST_P(MpiDevice, AllToAll) {
  ZT_SKIP_WITHOUT_GPU();
  check_all_to_all(comm(), dt());
}

INSTANTIATE_TEST_SUITE_P(Staged, MpiDevice,
                         testing::Combine(testing::Values(DType::f32, DType::bf16),
                                          testing::Bool()),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_chunked" : "_default");
                         });

TEST(MpiDeviceOrder, CollectiveRunsAfterTheProducerStream) {
  ZT_SKIP_WITHOUT_GPU();
  check_ordered_after_producer(mpi_comm(false));
  check_ordered_after_producer(mpi_comm(true));
}

TEST(MpiDeviceOrder, HostAndDeviceOperandsAreRefusedAtIssue) {
  ZT_SKIP_WITHOUT_GPU();
  Communicator& c = mpi_comm(false);
  const int w = c.world();
  Tensor host = Tensor::zeros({4 * w});
  Tensor dev = Tensor::zeros({4}, DType::f32, my_gpu());
  try {
    c.reduce_scatter(host, dev);
    ADD_FAILURE() << "reduce_scatter of a host input into a device output did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("both must be on one device"), std::string::npos)
        << e.what();
  }
  c.barrier();  // nothing was issued: the ranks are still in step
}

// make_communicator on this machine: one rank per GPU -> nccl; more ranks than GPUs on one node
// (the H100 machine with 2 ranks) -> mpi, and nccl refused on every rank naming the shared GPU.
TEST(MpiDeviceChoice, MakeCommunicatorOnThisMachine) {
  ZT_SKIP_WITHOUT_GPU();
  // Some node has more ranks than GPUs (the same answer on every rank).
  const int mine = Bootstrap::instance().topology().local_size > cuda::device_count() ? 1 : 0;
  int any = 0;
  MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  const bool shared = any != 0;
  std::string reason;
  std::unique_ptr<Communicator> c = make_communicator(Backend::auto_select, true, {}, &reason);
  EXPECT_EQ(c->backend(), shared ? "mpi" : "nccl") << reason;
  if (shared) {
    EXPECT_NE(reason.find("share GPU"), std::string::npos) << reason;
    try {
      make_communicator(Backend::nccl, true);
      ADD_FAILURE() << "comm.backend: nccl with ranks sharing a GPU did not throw";
    } catch (const ConfigError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("NCCL refuses two ranks on one GPU; use comm.backend: mpi"),
                std::string::npos)
          << m;
      EXPECT_NE(m.find("ranks 0"), std::string::npos) << m;
    }
    // make_nccl_communicator itself refuses before anyone enters NCCL, on every rank alike.
    try {
      make_nccl_communicator();
      ADD_FAILURE() << "make_nccl_communicator with ranks sharing a GPU did not throw";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("NCCL refuses two ranks on one GPU"), std::string::npos)
          << e.what();
    }
  }
  // Host tensors never take nccl.
  EXPECT_EQ(make_communicator(Backend::auto_select, false)->backend(), "mpi");
  c->barrier();
}

}  // namespace
}  // namespace zt::comm::test
