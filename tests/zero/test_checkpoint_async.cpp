// tests/zero/test_checkpoint_async.cpp: Engine::save_checkpoint with SaveOptions::async in one
// process (the MPI suite test_checkpoint_mpi.cpp runs it on 1, 2 and 4 ranks).
//  - Training goes on while the persist runs, and what was persisted is the state at the save
//    (the writer is held until training has changed every weight), bit for bit.
//  - Resume from an async checkpoint continues bitwise like an uninterrupted run.
//  - persistent_time_interval: a save before the interval is skipped, a forced one is not; the
//    next due save waits for a running persist and reports the wait.
//  - Retention keeps the newest versions; a failed persist is reported by the next wait.
//  - A process SIGKILLed in the middle of an async persist (fork: the child trains while its
//    background writer is held mid-shard) leaves the previous version loadable.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "io/checkpoint_store.h"
#include "io/data.h"
#include "tests/zero/engine_test_util.h"
#include "zero/engine.h"

using namespace zt;
namespace fs = std::filesystem;

namespace {

zero::EngineSettings settings(DType dt = DType::f32) {
  zero::EngineSettings s;
  s.micro_batch = 2;
  s.gradient_accumulation_steps = 2;
  s.gradient_clipping = 1.0;
  s.adam.weight_decay = 0.1f;
  s.model_dtype = dt;
  s.scheduler = optim::make_warmup_decay_lr({0.0, 1e-2, 4, optim::WarmupType::linear}, 100);
  return s;
}

struct Dir {
  Dir() {
    char tmpl[] = "/tmp/zt_async_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~Dir() { fs::remove_all(path); }
  std::string path;
};

std::vector<float> run(zero::Engine& e, io::WindowSampler& s, int steps) {
  std::vector<float> losses;
  Tensor ids, tgt;
  for (int i = 0; i < steps; ++i)
    for (int m = 0; m < 2; ++m) {
      s.next(ids, tgt);
      losses.push_back(e.forward(ids, tgt));
      e.backward();
      e.step();
    }
  return losses;
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  std::vector<uint8_t> b(t.nbytes());
  std::memcpy(b.data(), t.raw(), b.size());
  return b;
}

zero::SaveOptions async_opts() {
  zero::SaveOptions o;
  o.async = true;
  return o;
}

void async_resume_is_bitwise(DType dt) {
  io::TokenStream data = test::pattern_data();
  Dir dir;
  nn::GPT a(test::small_gpt());
  a.init_weights(1);
  zero::Engine ea(a, settings(dt));
  io::WindowSampler sa(data, 2, 16, 9, 0, 1);
  std::vector<float> straight = run(ea, sa, 8);

  nn::GPT b(test::small_gpt());
  b.init_weights(1);
  zero::Engine eb(b, settings(dt));
  io::WindowSampler sb(data, 2, 16, 9, 0, 1);
  std::vector<float> first = run(eb, sb, 4);
  // Hold the writer until training has moved on: the persisted state must be the snapshot's.
  std::atomic<bool> release{false};
  zero::SaveOptions o = async_opts();
  o.on_write_progress = [&](uint64_t, uint64_t) {
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  zero::SaveResult sr = eb.save_checkpoint(dir.path, "", std::to_string(sb.position()), o);
  EXPECT_EQ(sr.mode, zero::SaveResult::Mode::async);
  EXPECT_EQ(sr.tag, "global_step4");
  EXPECT_TRUE(eb.checkpoint_persisting());
  std::vector<float> cont = run(eb, sb, 4);  // training goes on during the persist
  EXPECT_FALSE(fs::exists(dir.path + "/global_step4")) << "published before it was written";
  release = true;
  zero::CheckpointWait w = eb.wait_checkpoint();
  EXPECT_EQ(w.tag, "global_step4");
  EXPECT_GT(w.bytes, 0u);
  EXPECT_FALSE(eb.checkpoint_persisting());
  EXPECT_TRUE(io::verify(dir.path, "global_step4").empty());

  std::vector<float> all = first;
  all.insert(all.end(), cont.begin(), cont.end());
  EXPECT_EQ(all, straight) << "the snapshot copy changes nothing in training";

  nn::GPT f(test::small_gpt());
  f.init_weights(777);
  zero::Engine ef(f, settings(dt));
  zero::LoadResult r = ef.load_checkpoint(dir.path);
  EXPECT_EQ(r.tag, "global_step4");
  io::WindowSampler sf(data, 2, 16, 9, 0, 1);
  sf.set_position(std::stoll(r.client_state));
  std::vector<float> second = run(ef, sf, 4);
  first.insert(first.end(), second.begin(), second.end());
  EXPECT_EQ(first, straight) << dtype_name(dt);
  EXPECT_EQ(bytes_of(ea.model_params()), bytes_of(ef.model_params())) << "weights differ";
}

TEST(CheckpointAsync, ResumeIsBitwiseF32) { async_resume_is_bitwise(DType::f32); }
TEST(CheckpointAsync, ResumeIsBitwiseBf16) { async_resume_is_bitwise(DType::bf16); }

TEST(CheckpointAsync, IntervalSkipsForceAndWaitsAreReported) {
  io::TokenStream data = test::pattern_data();
  Dir dir;
  nn::GPT a(test::small_gpt());
  zero::Engine e(a, settings());
  io::WindowSampler s(data, 2, 16, 9, 0, 1);
  run(e, s, 1);
  zero::SaveOptions o = async_opts();
  o.min_interval_s = 3600;
  std::atomic<bool> release{false};
  o.on_write_progress = [&](uint64_t, uint64_t) {
    while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  EXPECT_EQ(e.save_checkpoint(dir.path, "", "{}", o).mode, zero::SaveResult::Mode::async);
  run(e, s, 1);
  zero::SaveResult skipped = e.save_checkpoint(dir.path, "", "{}", o);
  EXPECT_EQ(skipped.mode, zero::SaveResult::Mode::skipped);
  EXPECT_NE(skipped.message.find("persistent_time_interval"), std::string::npos) << skipped.message;
  EXPECT_TRUE(e.checkpoint_persisting()) << "a skipped save does not wait for the running persist";
  // A forced save (the final one) is due; the first persist is still held: it waits, and says so.
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    release = true;
  });
  run(e, s, 1);
  o.force = true;
  zero::SaveResult forced = e.save_checkpoint(dir.path, "", "{}", o);
  releaser.join();
  EXPECT_EQ(forced.mode, zero::SaveResult::Mode::async);
  EXPECT_EQ(forced.previous.tag, "global_step1");
  EXPECT_GT(forced.previous.wait_ms, 50.0) << "the wait for the running persist is reported";
  EXPECT_GE(forced.blocked_ms, forced.previous.wait_ms);
  e.wait_checkpoint();
  EXPECT_EQ(io::list_tags(dir.path), (std::vector<std::string>{"global_step1", "global_step3"}));
  EXPECT_EQ(io::read_latest(dir.path), "global_step3");
}

TEST(CheckpointAsync, RetentionKeepsTheNewestVersions) {
  io::TokenStream data = test::pattern_data();
  Dir dir;
  nn::GPT a(test::small_gpt());
  zero::Engine e(a, settings());
  io::WindowSampler s(data, 2, 16, 9, 0, 1);
  zero::SaveOptions o = async_opts();
  o.keep = 2;
  for (int i = 0; i < 4; ++i) {
    run(e, s, 1);
    e.save_checkpoint(dir.path, "", "{}", o);
  }
  e.wait_checkpoint();
  EXPECT_EQ(io::list_tags(dir.path), (std::vector<std::string>{"global_step3", "global_step4"}));
}

TEST(CheckpointAsync, AFailedPersistIsReportedByTheNextWait) {
  io::TokenStream data = test::pattern_data();
  Dir dir;
  nn::GPT a(test::small_gpt());
  zero::Engine e(a, settings());
  io::WindowSampler s(data, 2, 16, 9, 0, 1);
  run(e, s, 1);
  e.save_checkpoint(dir.path, "", "{}", async_opts());
  e.wait_checkpoint();
  run(e, s, 1);
  zero::SaveOptions o = async_opts();
  o.on_write_progress = [](uint64_t, uint64_t) { throw CheckpointError("disk went away"); };
  e.save_checkpoint(dir.path, "", "{}", o);  // returns: the failure happens in the background
  try {
    e.wait_checkpoint();
    ADD_FAILURE() << "the failure was not reported";
  } catch (const CheckpointError& err) {
    EXPECT_NE(std::string(err.what()).find("background persist of 'global_step2'"), std::string::npos)
        << err.what();
    EXPECT_NE(std::string(err.what()).find("disk went away"), std::string::npos) << err.what();
  }
  EXPECT_EQ(io::read_latest(dir.path), "global_step1");
  EXPECT_EQ(io::list_tags(dir.path), std::vector<std::string>{"global_step1"});
  EXPECT_FALSE(fs::exists(io::tmp_dir(dir.path, "global_step2")));
}

// A real SIGKILL while the background writer is in the middle of a shard: the child trains on
// (its main thread) with the writer held after the first chunk; the parent kills it.
TEST(CheckpointAsync, SigkillDuringAPersistLeavesThePreviousVersionLoadable) {
  Dir dir;
  io::TokenStream data = test::pattern_data();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    try {
      nn::GPT a(test::small_gpt());
      a.init_weights(5);
      zero::Engine e(a, settings());
      io::WindowSampler s(data, 2, 16, 9, 0, 1);
      run(e, s, 2);
      e.save_checkpoint(dir.path, "", "{}", async_opts());
      e.wait_checkpoint();  // global_step2 complete
      run(e, s, 2);
      zero::SaveOptions o = async_opts();
      o.on_write_progress = [&](uint64_t written, uint64_t total) {
        if (written >= total) return;  // hold it in the middle, never at the end
        char c = 'k';
        (void)!::write(fds[1], &c, 1);
        for (;;) ::pause();
      };
      e.save_checkpoint(dir.path, "", "{}", o);
      for (;;) run(e, s, 1);  // training goes on until the kill
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "child: %s\n", ex.what());
      ::_exit(3);
    }
  }
  ::close(fds[1]);
  pollfd p{fds[0], POLLIN, 0};
  char c = 0;
  EXPECT_TRUE(::poll(&p, 1, 120000) == 1 && ::read(fds[0], &c, 1) == 1)
      << "the child's persist never started";
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(fds[0]);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_TRUE(fs::exists(io::tmp_dir(dir.path, "global_step4"))) << "killed mid-persist";
  EXPECT_EQ(io::list_tags(dir.path), std::vector<std::string>{"global_step2"});

  nn::GPT f(test::small_gpt());
  zero::Engine ef(f, settings());
  zero::LoadResult r = ef.load_checkpoint(dir.path);
  EXPECT_EQ(r.tag, "global_step2");
  EXPECT_TRUE(r.message.empty()) << r.message;
  EXPECT_EQ(ef.global_step(), 2);
  io::cleanup_stale(dir.path);
  EXPECT_FALSE(fs::exists(io::tmp_dir(dir.path, "global_step4")));
}

}  // namespace
