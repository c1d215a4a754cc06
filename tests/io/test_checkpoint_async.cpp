// tests/io/test_checkpoint_async.cpp: persist_checkpoint (io/checkpoint_async.h), the save protocol
// with caller-supplied agreement, and the pieces of the asynchronous save: ShardSnapshot::assign
// (a reusable copy) and BackgroundJob.
//  - One rank: a persisted tag verifies and reads back; retention keeps the newest versions and
//    deletes an older one only once a newer one is published.
//  - Several ranks as threads of one process, agreeing through an in-memory "collective" (a
//    std::barrier): all ranks' shards land in one tag; a failure on one rank makes every rank
//    throw and leaves the previous tag as it was; a rank 0 that cannot create the folder, likewise.
// (SIGKILL during a background persist: test_checkpoint_crash.cpp.)
#include "core/error.h"
#include "io/checkpoint_async.h"
#include "io/checkpoint_writer.h"
#include "test_checkpoint_util.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <mutex>
#include <thread>

namespace zt::io {
namespace {

using testing::SampleShard;
using testing::sample_manifest;
using testing::save_sample;
using testing::TempDir;

PersistRequest request(const std::string& dir, const std::string& tag, int64_t step, int rank,
                       int world, const SafetensorsWriter& shard) {
  PersistRequest r;
  r.dir = dir;
  r.tag = tag;
  r.rank = rank;
  r.world = world;
  r.shard = &shard;
  if (rank == 0) {
    r.manifest = sample_manifest(tag, step, world);
    r.client_state_json = "{\"step\": " + std::to_string(step) + "}";
  }
  return r;
}

TEST(CheckpointAsync, OneRankPersistsAndRetentionFollowsCompleteTags) {
  TempDir tmp;
  const std::string dir = tmp / "ckpt";
  for (int step = 1; step <= 4; ++step) {
    SampleShard s(step);
    PersistRequest r = request(dir, default_tag(step), step, 0, 1, s.writer);
    r.keep = 2;
    PersistResult res = persist_checkpoint(r);
    EXPECT_EQ(res.shard_bytes, s.writer.file_size());
    EXPECT_GT(res.tag_bytes, res.shard_bytes);
    if (step >= 3) {
      EXPECT_EQ(res.retired, std::vector<std::string>{default_tag(step - 2)});
    }
  }
  EXPECT_EQ(list_tags(dir), (std::vector<std::string>{"global_step3", "global_step4"}));
  EXPECT_EQ(read_latest(dir), "global_step4");
  EXPECT_TRUE(verify(dir, "global_step4").empty());
  EXPECT_EQ(read_client_state(dir, "global_step4"), "{\"step\": 4}");
  EXPECT_EQ(open_shard(dir, "global_step4", 0).metadata().at("rank"), "4");
}

// An in-memory stand-in for the engine's communicator: `world` threads meet at a barrier.
struct FakeCollectives {
  explicit FakeCollectives(int world) : world(world), sync(world), flags(world), recs(world) {}
  PersistCollectives for_rank(int rank) {
    PersistCollectives pc;
    pc.any_failed = [this, rank](bool failed, const char*) {
      flags[rank] = failed;
      sync.arrive_and_wait();
      bool any = false;
      for (int r = 0; r < this->world; ++r) any = any || flags[r];
      sync.arrive_and_wait();  // nobody overwrites a flag before everyone has read them
      return any;
    };
    pc.gather = [this, rank](uint64_t size, uint64_t sum) {
      recs[rank] = {size, sum};
      sync.arrive_and_wait();
      auto out = recs;
      sync.arrive_and_wait();
      return out;
    };
    return pc;
  }
  int world;
  std::barrier<> sync;
  std::vector<char> flags;
  std::vector<std::pair<uint64_t, uint64_t>> recs;
};

// Runs persist_checkpoint on `world` threads; returns each rank's error ("" when it succeeded).
std::vector<std::string> persist_world(const std::string& dir, const std::string& tag, int64_t step,
                                       int world, int failing_rank = -1) {
  FakeCollectives fc(world);
  std::vector<std::string> errors(world);
  std::vector<std::thread> ts;
  for (int r = 0; r < world; ++r) {
    ts.emplace_back([&, r] {
      SampleShard s(static_cast<int>(step * 10 + r));
      PersistRequest req = request(dir, tag, step, r, world, s.writer);
      req.write.chunk_bytes = 512;
      if (r == failing_rank)
        req.write.on_progress = [](uint64_t written, uint64_t) {
          if (written > 1024) throw CheckpointError("rank's disk went away");
        };
      try {
        persist_checkpoint(req, fc.for_rank(r));
      } catch (const CheckpointError& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ts) t.join();
  return errors;
}

TEST(CheckpointAsync, ThreeRanksAgreeAndPublishOneTag) {
  TempDir tmp;
  const std::string dir = tmp.path();
  auto errors = persist_world(dir, "global_step5", 5, 3);
  EXPECT_EQ(errors, std::vector<std::string>(3));
  EXPECT_TRUE(verify(dir, "global_step5").empty());
  Manifest m = read_manifest(dir, "global_step5");
  EXPECT_EQ(m.world_size, 3);
  EXPECT_EQ(m.files.size(), 4u);  // three shards and the client state
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(open_shard(dir, "global_step5", r).metadata().at("rank"), std::to_string(50 + r));
}

TEST(CheckpointAsync, OneRankFailingFailsEveryRankAndKeepsThePreviousTag) {
  TempDir tmp;
  const std::string dir = tmp.path();
  save_sample(dir, "global_step1", 1, 3);
  auto errors = persist_world(dir, "global_step2", 2, 3, /*failing_rank=*/2);
  for (int r = 0; r < 3; ++r) EXPECT_FALSE(errors[r].empty()) << "rank " << r << " must fail too";
  EXPECT_NE(errors[2].find("disk went away"), std::string::npos) << errors[2];
  EXPECT_NE(errors[0].find("another rank"), std::string::npos) << errors[0];
  EXPECT_EQ(read_latest(dir), "global_step1");
  EXPECT_EQ(list_tags(dir), std::vector<std::string>{"global_step1"});
  EXPECT_FALSE(std::filesystem::exists(tmp_dir(dir, "global_step2"))) << "rank 0 cleaned up";
}

TEST(CheckpointAsync, UnwritableFolderFailsEveryRankAtBegin) {
  TempDir tmp;
  testing::spit(tmp / "file", "x");
  auto errors = persist_world(tmp / "file/sub", "t", 1, 2);  // a file where a folder should be
  EXPECT_FALSE(errors[0].empty());
  EXPECT_NE(errors[1].find("rank 0 could not start"), std::string::npos) << errors[1];
}

TEST(CheckpointAsync, SnapshotAssignCopiesAndReusesItsBuffers) {
  std::vector<float> a(1000, 1.f), b(10, 2.f);
  SafetensorsWriter w;
  w.add("a", DType::f32, {1000}, a.data());
  w.add("b", DType::f32, {10}, b.data());
  w.set_metadata("k", "v");
  ShardSnapshot snap;
  snap.assign(w);
  const void* first = snap.writer().entries()[0].data;
  EXPECT_EQ(snap.bytes(), 1010u * 4);
  EXPECT_EQ(snap.writer().metadata().at("k"), "v");
  a[0] = 5.f;  // the live buffer moves on; the snapshot keeps its copy
  EXPECT_EQ(static_cast<const float*>(first)[0], 1.f);
  snap.assign(w);  // the next save: same sizes, same memory, new values
  EXPECT_EQ(snap.writer().entries()[0].data, first) << "buffers are reused from save to save";
  EXPECT_EQ(static_cast<const float*>(first)[0], 5.f);
  EXPECT_EQ(snap.writer().file_size(), w.file_size());
}

TEST(CheckpointAsync, BackgroundJobRunsOneTaskAtATime) {
  BackgroundJob<int> job;
  EXPECT_FALSE(job.pending());
  std::atomic<bool> go{false};
  job.start([&] {
    while (!go) std::this_thread::yield();
    return 7;
  }, /*nice=*/5);
  EXPECT_TRUE(job.busy());
  EXPECT_THROW(job.start([] { return 1; }), Error);
  go = true;
  EXPECT_EQ(job.wait(), 7);
  EXPECT_FALSE(job.pending());
  job.start([]() -> int { throw CheckpointError("boom"); });
  EXPECT_THROW(job.wait(), CheckpointError);
  EXPECT_THROW(job.wait(), Error) << "nothing pending";
}

}  // namespace
}  // namespace zt::io
