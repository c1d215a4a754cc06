// tests/comm/test_nccl.cpp: the nccl backend (comm/nccl_communicator.cpp) on this rank's GPU:
// every op of the interface on device buffers, f32 and bf16, against exact references
// (device_collectives.h); ordering after the producer's stream; wait()/test(); the comm log and
// the observer; dup(); host tensors refused; and, in its own process (ctest entry
// comm.test_nccl_abort.np1), the failure path: an op that cannot complete within
// CommOptions::timeout_s aborts the NCCL communicator (ncclCommAbort) and fails with a CommError
// naming the op, its sequence number and the rank, and later issues are refused.
// Registered with one rank (the H100 machine has one GPU, and NCCL refuses two ranks on one GPU);
// it also runs with one rank per GPU on a bigger machine. Without a GPU on every rank, every test
// skips on every rank (device_test_util.h).
#include "comm/communicator.h"
#include "core/error.h"
#include "device_collectives.h"
#include "device_test_util.h"

#include <gtest/gtest.h>

#if ZT_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

namespace zt::comm::test {
namespace {

// The nccl communicator of the suite, created on first use (collective).
Communicator& nccl_comm() {
  static std::unique_ptr<Communicator> c;
  if (!c) c = make_nccl_communicator();
  return *c;
}

// 16-bit results are bitwise for up to two ranks (one rounding per ring step).
bool exact16(const Communicator& c) { return c.world() <= 2; }

TEST(Nccl, BackendAndDevice) {
  ZT_SKIP_WITHOUT_GPU();
  Communicator& c = nccl_comm();
  EXPECT_EQ(c.backend(), "nccl");
  EXPECT_EQ(c.world(), Bootstrap::instance().topology().world);
  EXPECT_EQ(c.rank(), Bootstrap::instance().topology().rank);
}

TEST(Nccl, EveryOpF32) {
  ZT_SKIP_WITHOUT_GPU();
  check_every_op(nccl_comm(), DType::f32, true);
}

TEST(Nccl, EveryOpBf16) {
  ZT_SKIP_WITHOUT_GPU();
  check_every_op(nccl_comm(), DType::bf16, exact16(nccl_comm()));
}

TEST(Nccl, AllReduceF16) {
  ZT_SKIP_WITHOUT_GPU();
  check_all_reduce(nccl_comm(), DType::f16, exact16(nccl_comm()));
}

TEST(Nccl, CollectiveRunsAfterTheProducerStream) {
  ZT_SKIP_WITHOUT_GPU();
  check_ordered_after_producer(nccl_comm());
}

// CommOptions::stream_wait_only: wait() only orders the caller's stream (no host block); the
// results read on that stream are the same, and barrier() still blocks.
TEST(Nccl, StreamWaitOnly) {
  ZT_SKIP_WITHOUT_GPU();
  CommOptions o;
  o.stream_wait_only = true;
  std::unique_ptr<Communicator> c = make_nccl_communicator(o);
  check_ordered_after_producer(*c);
  check_all_reduce(*c, DType::f32, true);
  check_all_gather(*c, DType::bf16);
  c->barrier();
}

TEST(Nccl, TestPollsUntilComplete) {
  ZT_SKIP_WITHOUT_GPU();
  Communicator& c = nccl_comm();
  Tensor buf = device_tensor(DType::f32, 1 << 20, [](int64_t) { return 1.0; });
  std::shared_ptr<Work> w = c.all_reduce(buf);
  const auto t0 = std::chrono::steady_clock::now();
  bool done = false;
  while (!done && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    done = w->test();
    if (!done) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  EXPECT_TRUE(done) << "test() never reported completion within 30 s";
  EXPECT_NO_THROW(w->wait());
  EXPECT_NO_THROW(w->wait());  // idempotent
  EXPECT_TRUE(w->test());
  EXPECT_EQ(to_host(buf).to_vector()[0], static_cast<float>(c.world()));
}

TEST(Nccl, CommLogAndObserver) {
  ZT_SKIP_WITHOUT_GPU();
  Communicator& c = nccl_comm();
  c.log().clear();
  c.log().set_enabled(true);
  std::atomic<int> calls{0};
  std::atomic<int64_t> bytes{0};
  std::atomic<bool> ordered{true};
  c.set_observer([&](const char* op, int64_t b, std::chrono::steady_clock::time_point begin,
                     std::chrono::steady_clock::time_point end) {
    if (std::string(op) != "all_reduce") return;
    ++calls;
    bytes = b;
    if (end < begin) ordered = false;
  });
  Tensor buf = device_tensor(DType::f32, 1001, [](int64_t) { return 0.5; });
  c.all_reduce(buf)->wait();
  c.all_reduce(buf)->wait();
  c.barrier();  // not logged, as with the mpi backend
  c.set_observer(nullptr);
  c.log().set_enabled(false);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(bytes.load(), 4004);
  EXPECT_TRUE(ordered.load());
  bool found = false;
  for (const CommLog::Entry& e : c.log().entries())
    if (e.op == "all_reduce" && e.bytes == 4004) {
      found = true;
      EXPECT_EQ(e.calls, 2);
      EXPECT_EQ(e.count, 1001);
      EXPECT_GE(e.total_seconds, 0.0);  // one rank in place: NCCL may have nothing to do
    }
  EXPECT_TRUE(found) << c.log().table();
  EXPECT_EQ(c.log().total_calls(), 2) << c.log().table();
  c.log().clear();
}

TEST(Nccl, DupIsAnIndependentCommunicator) {
  ZT_SKIP_WITHOUT_GPU();
  Communicator& c = nccl_comm();
  std::unique_ptr<Communicator> d = c.dup();
  EXPECT_EQ(d->backend(), "nccl");
  EXPECT_EQ(d->world(), c.world());
  Tensor a = device_tensor(DType::f32, 4096, [](int64_t i) { return static_cast<double>(i % 7); });
  Tensor b = device_tensor(DType::f32, 4096, [](int64_t i) { return static_cast<double>(i % 5); });
  auto wa = c.all_reduce(a);
  auto wb = d->all_reduce(b);
  wb->wait();
  wa->wait();
  std::vector<float> ha = to_host(a).to_vector(), hb = to_host(b).to_vector();
  int64_t bad = 0;
  for (int64_t i = 0; i < 4096; ++i)
    bad += ha[static_cast<size_t>(i)] != static_cast<float>((i % 7) * c.world()) ||
           hb[static_cast<size_t>(i)] != static_cast<float>((i % 5) * c.world());
  EXPECT_EQ(bad, 0);
  d->barrier();
}

TEST(Nccl, HostTensorsAndOtherDevicesAreRefused) {
  ZT_SKIP_WITHOUT_GPU();
  Communicator& c = nccl_comm();
  Tensor host = Tensor::zeros({16});
  try {
    c.all_reduce(host);
    ADD_FAILURE() << "all_reduce of a host tensor on nccl did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use the mpi backend for host tensors"), std::string::npos)
        << e.what();
  }
  // Nothing was issued: the communicator still works.
  Tensor buf = device_tensor(DType::f32, 3, [](int64_t) { return 2.0; });
  c.all_reduce(buf, ReduceOp::max)->wait();
  EXPECT_EQ(to_host(buf).to_vector()[2], 2.0f);
}

#if ZT_WITH_CUDA
// Blocks the stream it is enqueued on for `ms` milliseconds (a host function on the stream).
void CUDART_CB sleep_on_stream(void* ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(*static_cast<int*>(ms)));
}
#endif

// [own process: comm.test_nccl_abort.np1] The caller's stream is held for 3 s by a host function,
// so the collective (ordered after it) cannot complete within timeout_s = 0.5: the monitor aborts
// the NCCL communicator and the op fails; later issues are refused with the first failure.
TEST(NcclAbort, TimeoutAbortsTheCommunicator) {
  ZT_SKIP_WITHOUT_GPU();
#if ZT_WITH_CUDA
  CommOptions o;
  o.timeout_s = 0.5;
  std::unique_ptr<Communicator> c = make_nccl_communicator(o);
  cuda::Stream s = cuda::Stream::create(my_gpu().index);
  Tensor buf = Tensor::zeros({1024}, DType::f32, my_gpu());
  {
    cuda::StreamGuard guard(s);
    static int hold_ms = 3000;
    ASSERT_EQ(cudaLaunchHostFunc(s.handle(), sleep_on_stream, &hold_ms), cudaSuccess);
    std::shared_ptr<Work> w = c->all_reduce(buf);
    try {
      w->wait();
      ADD_FAILURE() << "an all_reduce held past timeout_s completed without error";
    } catch (const CommError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("all_reduce #0"), std::string::npos) << m;
      EXPECT_NE(m.find("on rank " + std::to_string(c->rank())), std::string::npos) << m;
      EXPECT_NE(m.find("timeout_s"), std::string::npos) << m;
      EXPECT_NE(m.find("ncclCommAbort"), std::string::npos) << m;
    }
    try {
      c->all_reduce(buf);
      ADD_FAILURE() << "an aborted NCCL communicator accepted a new op";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("aborted after all_reduce #0"), std::string::npos)
          << e.what();
    }
  }
  c.reset();        // no finalize/destroy after an abort; the stream is destroyed
  s.synchronize();  // the host function returns; the stream drains
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
#endif
}

}  // namespace
}  // namespace zt::comm::test
