// tests/comm/test_comm_runtime.cpp: everything around the collectives: the bootstrap's topology,
// asynchrony (overlap with compute, progress without the caller, issue order), dup, the wait
// timeout, and the comm log's figures.
#include "comm/bootstrap.h"
#include "comm/comm_log.h"
#include "comm/communicator.h"
#include "comm_test_util.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

namespace zt::comm::test {
namespace {

using Clock = std::chrono::steady_clock;

// Busy work that never calls MPI (so any progress of a collective meanwhile is the comm thread's).
double compute(int64_t iters) {
  volatile double acc = 0;
  for (int64_t i = 0; i < iters; ++i) acc = acc + std::sqrt(static_cast<double>(i) + acc * 1e-9);
  return acc;
}

TEST(Bootstrap, TopologyOnOneMachine) {
  Bootstrap& boot = Bootstrap::instance();
  EXPECT_TRUE(Bootstrap::initialized());
  EXPECT_EQ(&Bootstrap::init(), &boot);  // idempotent
  EXPECT_TRUE(boot.thread_multiple());
  const Topology& t = boot.topology();
  Communicator& c = world_comm();
  EXPECT_EQ(t.rank, c.rank());
  EXPECT_EQ(t.world, c.world());
  // Every rank of these tests runs on this machine.
  EXPECT_EQ(t.nodes, 1);
  EXPECT_EQ(t.node, 0);
  EXPECT_EQ(t.local_size, t.world);
  EXPECT_EQ(t.local_rank, t.rank);
  EXPECT_FALSE(t.hostname.empty());
  EXPECT_NE(t.str().find("rank " + std::to_string(t.rank)), std::string::npos) << t.str();
  // And all ranks agree on the host name (compare a hash through the communicator).
  int32_t h = static_cast<int32_t>(std::hash<std::string>{}(t.hostname) & 0x7fffffff);
  Tensor mine = Tensor::empty({1}, DType::i32);
  mine.data<int32_t>()[0] = h;
  Tensor all = Tensor::zeros({t.world}, DType::i32);
  c.all_gather(mine, all)->wait();
  for (int r = 0; r < t.world; ++r) EXPECT_EQ(all.data<int32_t>()[r], h) << "rank " << r;
}

// Issue several collectives, compute, then wait in order: all results right.
TEST(Async, SeveralInFlightWhileComputing) {
  Communicator& c = world_comm();
  const int me = c.rank(), w = c.world();
  const int64_t n = 65537;
  Tensor a = make_tensor(DType::f32, n, [&](int64_t i) { return exact_value(me, i); });
  Tensor h = make_tensor(DType::bf16, n, [&](int64_t i) { return exact_value(me, i); });
  Tensor rs_in = make_tensor(DType::f16, w * n, [&](int64_t i) { return exact_value(me, i); });
  Tensor rs_out = Tensor::zeros({n}, DType::f16);
  Tensor ag_in = make_tensor(DType::f32, n, [&](int64_t i) { return random_value(me, i); });
  Tensor ag_out = Tensor::zeros({w * n});
  Tensor b = make_tensor(DType::f32, 1001, [&](int64_t i) { return random_value(me, i); });
  std::vector<std::shared_ptr<Work>> works = {c.all_reduce(a), c.all_reduce(h, ReduceOp::avg),
                                              c.reduce_scatter(rs_in, rs_out),
                                              c.all_gather(ag_in, ag_out), c.broadcast(b, w - 1)};
  compute(2'000'000);
  for (auto& work : works) work->wait();
  for (auto& work : works) EXPECT_TRUE(work->test());  // wait() is idempotent; test() agrees

  std::vector<float> ra(n), rh(n), rrs(n), rag, rb;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int r = 0; r < w; ++r) s += exact_value(r, i);
    ra[i] = round_to(DType::f32, s);
    rh[i] = round_to(DType::bf16, s / w);
    double srs = 0;
    for (int r = 0; r < w; ++r) srs += exact_value(r, me * n + i);
    rrs[i] = round_to(DType::f16, srs);
  }
  for (int r = 0; r < w; ++r)
    for (int64_t i = 0; i < n; ++i) rag.push_back(round_to(DType::f32, random_value(r, i)));
  for (int64_t i = 0; i < 1001; ++i) rb.push_back(round_to(DType::f32, random_value(w - 1, i)));
  expect_equal(a, ra, "all_reduce");
  expect_equal(h, rh, "all_reduce bf16 avg");
  expect_equal(rs_out, rrs, "reduce_scatter f16");
  expect_equal(ag_out, rag, "all_gather");
  expect_equal(b, rb, "broadcast");
}

// A collective completes while the caller never enters MPI: test() only reads a flag, so
// completion proves the comm thread progresses it (the overlap DeepSpeed's overlap_comm needs).
TEST(Async, ProgressesWithoutTheCaller) {
  Communicator& c = world_comm();
  Tensor big = Tensor::zeros({int64_t{1} << 22});  // 16 MiB
  auto work = c.all_reduce(big);
  auto t0 = Clock::now();
  bool done = false;
  int rounds = 0;
  while (!(done = work->test()) && Clock::now() - t0 < std::chrono::seconds(60)) {
    compute(100'000);
    ++rounds;
  }
  EXPECT_TRUE(done) << "all_reduce did not complete in 60 s of computing without MPI calls";
  work->wait();
}

// Ops on one buffer run in issue order: two queued all_reduces of x give w^2 x.
TEST(Async, IssueOrderIsKept) {
  Communicator& c = world_comm();
  const int w = c.world();
  Tensor x = make_tensor(DType::f32, 1001, [](int64_t i) { return static_cast<double>(i % 5); });
  auto w1 = c.all_reduce(x);
  auto w2 = c.all_reduce(x);
  Tensor y = Tensor::zeros({w * int64_t{1001}});
  auto w3 = c.all_gather(x, y);  // sees the result of both
  w3->wait();
  EXPECT_TRUE(w1->test());  // completed before w3, in order
  EXPECT_TRUE(w2->test());
  std::vector<float> ref;
  for (int r = 0; r < w; ++r)
    for (int64_t i = 0; i < 1001; ++i) ref.push_back(static_cast<float>(w * w * (i % 5)));
  expect_equal(y, ref, "all_reduce, all_reduce, all_gather");
}

// A dup has its own context and thread: its ops and the parent's do not interleave, and a dup
// outlives nothing it needs.
TEST(Dup, IndependentCommunicator) {
  Communicator& c = world_comm();
  std::unique_ptr<Communicator> d = c.dup();
  EXPECT_EQ(d->rank(), c.rank());
  EXPECT_EQ(d->world(), c.world());
  EXPECT_EQ(d->backend(), "mpi");
  const int w = c.world();
  Tensor x = make_tensor(DType::f32, 7, [](int64_t) { return 1.0; });
  Tensor y = make_tensor(DType::f32, 7, [](int64_t) { return 2.0; });
  auto wd = d->all_reduce(y);
  auto wc = c.all_reduce(x);
  wc->wait();
  wd->wait();
  expect_equal(x, std::vector<float>(7, static_cast<float>(w)), "parent");
  expect_equal(y, std::vector<float>(7, static_cast<float>(2 * w)), "dup");
  // Destroying a communicator with ops in flight runs them first.
  Tensor z = make_tensor(DType::f32, 1001, [](int64_t) { return 3.0; });
  d->all_reduce(z);
  d.reset();
  expect_equal(z, std::vector<float>(1001, static_cast<float>(3 * w)), "drained at destruction");
}

// timeout_s: wait() gives up with a CommError while the op is stuck (rank 1 waits for a broadcast
// rank 0 has not issued yet); once rank 0 issues it, the op completes and wait() succeeds.
TEST(Timeout, WaitGivesUpThenOpCompletes) {
  Communicator& c = world_comm();
  ASSERT_GE(c.world(), 2) << "needs two ranks (the one-rank ctest entries filter it out)";
  CommOptions o;
  o.timeout_s = 0.3;
  std::unique_ptr<Communicator> d = make_mpi_communicator(o);
  Tensor buf = make_tensor(DType::f32, 7, [&](int64_t) { return c.rank() == 0 ? 5.0 : 1.0; });
  std::shared_ptr<Work> work;
  if (c.rank() == 1) {
    work = d->broadcast(buf, 0);
    try {
      work->wait();
      ADD_FAILURE() << "wait() returned although root had not broadcast";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("broadcast #0"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("timeout_s"), std::string::npos) << e.what();
    }
  }
  c.barrier();  // on the other communicator: rank 1's comm thread is still inside MPI_Bcast
  if (c.rank() != 1) work = d->broadcast(buf, 0);
  work->wait();
  expect_equal(buf, std::vector<float>(7, 5.0f), "broadcast after the timeout");
}

TEST(CommLog, CountsBytesAndBusbw) {
  Communicator& c = world_comm();
  const int w = c.world();
  std::unique_ptr<Communicator> d = c.dup();
  CommLog& log = d->log();
  EXPECT_FALSE(log.enabled());
  Tensor x = Tensor::zeros({1001});
  d->all_reduce(x)->wait();
  EXPECT_EQ(log.total_calls(), 0) << "a disabled log records nothing";

  log.set_enabled(true);
  for (int k = 0; k < 3; ++k) d->all_reduce(x)->wait();
  Tensor h = Tensor::zeros({7}, DType::bf16);
  Tensor hg = Tensor::zeros({7 * w}, DType::bf16);
  d->all_gather(h, hg)->wait();
  d->reduce_scatter(hg, h)->wait();
  d->broadcast(x, 0)->wait();
  d->barrier();  // not a data op: not logged

  std::vector<CommLog::Entry> es = log.entries();
  EXPECT_EQ(es.size(), 4u);  // (no ASSERT before the collectives below: see mpi_test_main.cpp)
  es.resize(4);
  // Sorted by op name: all_gather, all_reduce, broadcast, reduce_scatter.
  EXPECT_EQ(es[0].op, "all_gather");
  EXPECT_EQ(es[0].calls, 1);
  EXPECT_EQ(es[0].bytes, 7 * 2 * w);  // the gathered size
  EXPECT_EQ(es[0].count, 7 * w);
  EXPECT_EQ(es[1].op, "all_reduce");
  EXPECT_EQ(es[1].calls, 3);
  EXPECT_EQ(es[1].bytes, 1001 * 4);
  EXPECT_EQ(es[1].count, 1001);
  EXPECT_EQ(es[1].dtype, DType::f32);
  EXPECT_EQ(es[2].op, "broadcast");
  EXPECT_EQ(es[2].bytes, 1001 * 4);
  EXPECT_EQ(es[3].op, "reduce_scatter");
  EXPECT_EQ(es[3].bytes, 7 * 2 * w);
  EXPECT_EQ(es[3].dtype, DType::bf16);
  EXPECT_EQ(log.total_calls(), 6);
  for (const auto& e : es) {
    EXPECT_GT(e.total_seconds, 0) << e.op;
    // (the mean of equal times may round an ulp past them)
    EXPECT_LE(e.min_seconds, e.mean_seconds() * (1 + 1e-12)) << e.op;
    EXPECT_LE(e.mean_seconds(), e.max_seconds * (1 + 1e-12)) << e.op;
    EXPECT_DOUBLE_EQ(e.algbw_gbs(), e.bytes / e.mean_seconds() / 1e9) << e.op;
  }
  // The nccl-tests factors.
  const double n = w;
  EXPECT_DOUBLE_EQ(es[1].busbw_gbs(w), es[1].algbw_gbs() * (w > 1 ? 2 * (n - 1) / n : 0));
  EXPECT_DOUBLE_EQ(es[0].busbw_gbs(w), es[0].algbw_gbs() * (w > 1 ? (n - 1) / n : 0));
  EXPECT_DOUBLE_EQ(es[3].busbw_gbs(w), es[3].algbw_gbs() * (w > 1 ? (n - 1) / n : 0));
  EXPECT_DOUBLE_EQ(es[2].busbw_gbs(w), es[2].algbw_gbs());
  EXPECT_DOUBLE_EQ(busbw_factor("all_reduce", 4), 1.5);
  EXPECT_DOUBLE_EQ(busbw_factor("all_gather", 4), 0.75);
  EXPECT_DOUBLE_EQ(busbw_factor("reduce_scatter", 8), 0.875);
  EXPECT_DOUBLE_EQ(busbw_factor("broadcast", 8), 1.0);
  EXPECT_DOUBLE_EQ(busbw_factor("reduce_scatter_v", 4), 0.75);

  std::string table = log.table("test");
  EXPECT_NE(table.find("all_reduce"), std::string::npos) << table;
  EXPECT_NE(table.find("busbw"), std::string::npos) << table;

  // prof_ops: only the named ops; a dup inherits the options.
  log.clear();
  CommLogOptions opts;
  opts.enabled = true;
  opts.prof_all = false;
  opts.prof_ops = {"all_gather"};
  log.configure(opts);
  d->all_reduce(x)->wait();
  d->all_gather(h, hg)->wait();
  es = log.entries();
  EXPECT_EQ(es.size(), 1u);
  EXPECT_EQ(es.empty() ? "" : es[0].op, "all_gather");
  std::unique_ptr<Communicator> dd = d->dup();
  EXPECT_TRUE(dd->log().enabled());
  EXPECT_FALSE(dd->log().wants("all_reduce"));
  EXPECT_TRUE(dd->log().wants("all_gather"));
}

}  // namespace
}  // namespace zt::comm::test
