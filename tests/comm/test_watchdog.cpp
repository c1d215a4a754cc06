// tests/comm/test_watchdog.cpp: the collective watchdog (comm/watchdog.h) under mpiexec.
//  - A rank that stalls outside MPI past the timeout: every waiting rank's report names the
//    collective (op, sequence number, bytes), the training step and the missing rank, found through
//    the heartbeat side channel while the training communicator is stuck. (The test hook
//    on_timeout receives the report instead of MPI_Abort; the late rank then joins and the
//    collective completes.)
//  - stop() is collective and returns on every rank even when the ranks arrive seconds apart.
//  - The environment variables (NCCL_TIMEOUT, [TORCH_]NCCL_BLOCKING_WAIT,
//    [TORCH_]NCCL_ASYNC_ERROR_HANDLING) and their bad values.
// The end-to-end paths (MPI_Abort within the bound, exit 124, kill -9) are in
// tests/apps/test_faults.py.
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/watchdog.h"
#include "core/error.h"
#include "core/tensor.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

namespace zt::comm {
namespace {

int rank() { return Bootstrap::instance().topology().rank; }
int world() { return Bootstrap::instance().topology().world; }

TEST(Watchdog, StalledRankIsNamedWithTheCollectiveAndTheStep) {
  ASSERT_GE(world(), 2) << "needs 2 ranks (the one-rank ctest entry filters it out)";
  std::mutex mu;
  std::string report;
  WatchdogOptions o;
  o.timeout_s = 0.5;
  o.heartbeat_s = 0.1;
  o.on_timeout = [&](const std::string& m) {
    std::lock_guard<std::mutex> lk(mu);
    report = m;
  };
  Watchdog wd(o);
  auto comm = make_mpi_communicator();
  Watchdog::set_step(7);
  Tensor t = Tensor::from_vector({1.f, 2.f, 3.f}, {3});
  comm->all_reduce(t)->wait();  // op #0 completes everywhere
  if (rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  comm->all_reduce(t)->wait();  // op #1: rank 1 is 2.5 s late
  Watchdog::set_step(-1);
  std::string r;
  {
    std::lock_guard<std::mutex> lk(mu);
    r = report;
  }
  if (rank() == 1) {
    EXPECT_EQ(r, "") << "the late rank never waited";
  } else {
    EXPECT_NE(r.find("all_reduce #1 (f32, 3 elements, 12 bytes"), std::string::npos) << r;
    EXPECT_NE(r.find("at training step 7"), std::string::npos) << r;
    EXPECT_NE(r.find("missing: rank 1 (at step 7, not in a collective, last completed op #0"),
              std::string::npos)
        << r;
    EXPECT_EQ(r.find("missing: rank 0"), std::string::npos) << r;
    EXPECT_EQ(r.find("heartbeats stopped"), std::string::npos) << r;
    EXPECT_NE(r.find("waiting in it: rank"), std::string::npos) << r;
  }
  EXPECT_FLOAT_EQ(t.data<float>()[0], static_cast<float>(world() * world()));
  wd.stop();
}

TEST(Watchdog, StopIsCollectiveAndReturnsWhenRanksArriveApart) {
  WatchdogOptions o;
  o.timeout_s = 30;
  o.heartbeat_s = 0.05;
  Watchdog wd(o);
  std::this_thread::sleep_for(std::chrono::milliseconds(300 * rank()));
  auto t0 = std::chrono::steady_clock::now();
  wd.stop();
  wd.stop();  // idempotent
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 5.0);
}

TEST(Watchdog, EnvironmentVariables) {
  unsetenv("NCCL_TIMEOUT");
  unsetenv("NCCL_BLOCKING_WAIT");
  unsetenv("TORCH_NCCL_BLOCKING_WAIT");
  unsetenv("NCCL_ASYNC_ERROR_HANDLING");
  unsetenv("TORCH_NCCL_ASYNC_ERROR_HANDLING");
  WatchdogOptions o = options_from_env(1800);
  EXPECT_EQ(o.timeout_s, 1800);
  EXPECT_TRUE(o.abort_on_timeout);
  EXPECT_FALSE(o.blocking_wait);
  EXPECT_TRUE(o.notes.empty());
  setenv("NCCL_TIMEOUT", "42", 1);
  setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0", 1);
  o = options_from_env(1800);
  EXPECT_EQ(o.timeout_s, 42);
  EXPECT_FALSE(o.abort_on_timeout);
  EXPECT_EQ(o.notes.size(), 2u);
  setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3", 1);
  setenv("NCCL_BLOCKING_WAIT", "1", 1);
  o = options_from_env(1800);
  EXPECT_TRUE(o.blocking_wait);
  EXPECT_FALSE(o.abort_on_timeout);
  setenv("NCCL_TIMEOUT", "soon", 1);
  try {
    options_from_env(1800);
    ADD_FAILURE() << "NCCL_TIMEOUT=soon accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("NCCL_TIMEOUT=soon"), std::string::npos) << e.what();
  }
  unsetenv("NCCL_TIMEOUT");
  unsetenv("NCCL_BLOCKING_WAIT");
  unsetenv("TORCH_NCCL_ASYNC_ERROR_HANDLING");
}

}  // namespace
}  // namespace zt::comm
