// tests/zero/test_checkpoint_mpi.cpp: Engine::save_checkpoint / load_checkpoint under mpiexec.
// A run of 2n steps and a run of n steps + save + load into a fresh engine (other initial
// weights) + n steps give the same losses and weights bit for bit, at every stage; a checkpoint
// saved at one stage loads at another. The same with asynchronous saves: the persist runs on
// background threads (their own communicator) while the ranks train on, and resume is bitwise;
// persistent_time_interval decisions are the same on every rank. (A save called on one rank only:
// ckpt_lonely_save.cpp; single-process async cases: test_checkpoint_async.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "comm/communicator.h"
#include "io/checkpoint_store.h"
#include "io/data.h"
#include "tests/zero/engine_test_util.h"
#include "zero/engine.h"

using namespace zt;
namespace fs = std::filesystem;

namespace {

comm::Communicator& world_comm() {
  static std::unique_ptr<comm::Communicator> c = comm::make_mpi_communicator();
  return *c;
}

zero::EngineSettings settings(int stage, DType dt = DType::f32) {
  zero::EngineSettings s;
  s.zero_stage = stage;
  s.micro_batch = 2;
  s.gradient_accumulation_steps = 2;
  s.gradient_clipping = 1.0;
  s.adam.weight_decay = 0.1f;
  s.model_dtype = dt;
  s.overlap_comm = true;
  s.reduce_bucket_size = 3000;
  s.scheduler = optim::make_warmup_decay_lr({0.0, 1e-2, 4, optim::WarmupType::linear}, 100);
  return s;
}

// A folder shared by all ranks (rank 0 picks it, everyone gets the same name).
std::string shared_dir(const char* name) {
  std::string d = (fs::temp_directory_path() / ("zt_ckpt_" + std::string(name))).string();
  if (world_comm().rank() == 0) {
    fs::remove_all(d);
    fs::create_directories(d);
  }
  world_comm().barrier();
  return d;
}

// Runs `steps` windows, returning the losses; the sampler continues from `sampler`.
std::vector<float> run(zero::Engine& e, io::WindowSampler& sampler, int steps) {
  std::vector<float> losses;
  Tensor ids, tgt;
  for (int i = 0; i < steps; ++i)
    for (int m = 0; m < 2; ++m) {
      sampler.next(ids, tgt);
      losses.push_back(e.forward(ids, tgt));
      e.backward();
      e.step();
    }
  return losses;
}

void resume_is_bitwise(int stage, DType dt, bool async = false) {
  comm::Communicator& c = world_comm();
  io::TokenStream data = test::pattern_data();
  std::string dir = shared_dir(("resume_s" + std::to_string(stage) + dtype_name(dt)).c_str());

  nn::GPT a(test::small_gpt());
  a.init_weights(1);
  zero::Engine ea(a, settings(stage, dt), &c);
  io::WindowSampler sa(data, 2, 16, 9, c.rank(), c.world());
  std::vector<float> straight = run(ea, sa, 8);

  nn::GPT b(test::small_gpt());
  b.init_weights(1);
  zero::Engine eb(b, settings(stage, dt), &c);
  io::WindowSampler sb(data, 2, 16, 9, c.rank(), c.world());
  std::vector<float> first = run(eb, sb, 4);
  zero::SaveOptions so;
  so.async = async;
  zero::SaveResult sr =
      eb.save_checkpoint(dir, "", "{\"position\": " + std::to_string(sb.position()) + "}", so);
  if (async) {
    EXPECT_EQ(sr.mode, zero::SaveResult::Mode::async);
    // The ranks train on while their background writers persist, and nothing changes for them.
    std::vector<float> cont = run(eb, sb, 4);
    eb.wait_checkpoint();
    std::vector<float> both = first;
    both.insert(both.end(), cont.begin(), cont.end());
    EXPECT_EQ(both, straight) << "training during the persist";
  }

  nn::GPT f(test::small_gpt());
  f.init_weights(777);  // different weights: everything must come from the checkpoint
  zero::Engine ef(f, settings(stage, dt), &c);
  zero::LoadResult r = ef.load_checkpoint(dir);
  EXPECT_EQ(r.tag, "global_step4");
  EXPECT_EQ(ef.global_step(), 4);
  io::WindowSampler sf(data, 2, 16, 9, c.rank(), c.world());
  sf.set_position(std::stoll(r.client_state.substr(r.client_state.find(':') + 1)));
  std::vector<float> second = run(ef, sf, 4);

  first.insert(first.end(), second.begin(), second.end());
  EXPECT_EQ(first, straight) << "stage " << stage << " " << dtype_name(dt);
  auto pa = ea.model_params().to_vector(), pf = ef.model_params().to_vector();
  EXPECT_EQ(std::memcmp(pa.data(), pf.data(), pa.size() * 4), 0) << "weights differ";
}

}  // namespace

TEST(CheckpointMpi, ResumeIsBitwiseStage0) { resume_is_bitwise(0, DType::f32); }
TEST(CheckpointMpi, ResumeIsBitwiseStage1) { resume_is_bitwise(1, DType::f32); }
TEST(CheckpointMpi, ResumeIsBitwiseStage2) { resume_is_bitwise(2, DType::f32); }
TEST(CheckpointMpi, ResumeIsBitwiseStage2Bf16) { resume_is_bitwise(2, DType::bf16); }
TEST(CheckpointMpi, ResumeIsBitwiseStage1Fp16) { resume_is_bitwise(1, DType::f16); }
TEST(CheckpointMpi, AsyncResumeIsBitwiseStage2) { resume_is_bitwise(2, DType::f32, true); }
TEST(CheckpointMpi, AsyncResumeIsBitwiseStage1Bf16) { resume_is_bitwise(1, DType::bf16, true); }
TEST(CheckpointMpi, AsyncResumeIsBitwiseStage0Fp16) { resume_is_bitwise(0, DType::f16, true); }

// Rank 0's clock decides whether a save is due; every rank skips or persists the same saves.
TEST(CheckpointMpi, AsyncIntervalIsAgreedByAllRanks) {
  comm::Communicator& c = world_comm();
  io::TokenStream data = test::pattern_data();
  std::string dir = shared_dir("async_interval");
  nn::GPT a(test::small_gpt());
  zero::Engine e(a, settings(2), &c);
  io::WindowSampler s(data, 2, 16, 4, c.rank(), c.world());
  zero::SaveOptions o;
  o.async = true;
  o.min_interval_s = 3600;
  o.keep = 2;
  std::vector<int> modes;
  for (int i = 0; i < 3; ++i) {
    run(e, s, 1);
    modes.push_back(static_cast<int>(e.save_checkpoint(dir, "", "{}", o).mode));
  }
  o.force = true;
  run(e, s, 1);
  modes.push_back(static_cast<int>(e.save_checkpoint(dir, "", "{}", o).mode));
  e.wait_checkpoint();
  const int A = static_cast<int>(zero::SaveResult::Mode::async),
            S = static_cast<int>(zero::SaveResult::Mode::skipped);
  EXPECT_EQ(modes, (std::vector<int>{A, S, S, A}));
  c.barrier();
  EXPECT_EQ(io::list_tags(dir), (std::vector<std::string>{"global_step1", "global_step4"}));
  EXPECT_TRUE(io::verify(dir, "global_step4").empty());
  EXPECT_EQ(io::read_manifest(dir, "global_step4").world_size, c.world());
}

TEST(CheckpointMpi, SavedAtStage2LoadsAtStage0And1) {
  comm::Communicator& c = world_comm();
  io::TokenStream data = test::pattern_data();
  std::string dir = shared_dir("cross_stage");
  nn::GPT a(test::small_gpt());
  a.init_weights(3);
  zero::Engine ea(a, settings(2), &c);
  io::WindowSampler sa(data, 2, 16, 4, c.rank(), c.world());
  run(ea, sa, 3);
  ea.save_checkpoint(dir);
  const std::vector<float> saved = ea.flat_params().to_vector();
  const int64_t position = sa.position();
  std::vector<float> cont = run(ea, sa, 3);
  for (int stage : {0, 1}) {
    nn::GPT b(test::small_gpt());
    b.init_weights(99);
    zero::Engine eb(b, settings(stage), &c);
    eb.load_checkpoint(dir);
    EXPECT_EQ(eb.flat_params().to_vector(), saved) << "stage " << stage;
    io::WindowSampler sb(data, 2, 16, 4, c.rank(), c.world());
    sb.set_position(position);
    std::vector<float> got = run(eb, sb, 3);
    // Same math, other reduction pattern: equal to float tolerance.
    ASSERT_EQ(got.size(), cont.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], cont[i], 1e-5 * std::abs(cont[i])) << "stage " << stage << " i " << i;
  }
}

TEST(CheckpointMpi, ManifestRecordsThePartitions) {
  comm::Communicator& c = world_comm();
  std::string dir = shared_dir("manifest");
  nn::GPT a(test::small_gpt());
  zero::Engine ea(a, settings(2), &c);
  ea.save_checkpoint(dir, "tagA", "{\"k\": 1}");
  c.barrier();
  io::Manifest m = io::read_manifest(dir, "tagA");
  EXPECT_EQ(m.world_size, c.world());
  EXPECT_EQ(m.zero_stage, 2);
  EXPECT_EQ(m.partitions.size(), static_cast<size_t>(c.world()));
  EXPECT_EQ(m.files.size(), static_cast<size_t>(c.world()) + 1);  // shards + client state
  EXPECT_TRUE(io::verify(dir, "tagA").empty());
  EXPECT_EQ(io::read_latest(dir).value_or(""), "tagA");
}


// ---- damaged tags: the load checksums while it reads (one pass), and never keeps a bad tag ------

namespace {

// Rank 0 flips one byte of a file (offset from the end when negative), then every rank goes on.
void flip_byte(const std::string& path, int64_t offset) {
  if (world_comm().rank() == 0) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const int64_t size = f.tellg();
    const int64_t at = offset < 0 ? size + offset : offset;
    f.seekg(at);
    char ch = 0;
    f.read(&ch, 1);
    ch = static_cast<char>(ch ^ 0x5a);
    f.seekp(at);
    f.write(&ch, 1);
  }
  world_comm().barrier();
}

std::string last_shard(const std::string& dir, const std::string& tag) {
  return io::tag_dir(dir, tag) + "/" + io::shard_file_name(world_comm().world() - 1);
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

bool all_nan(const Tensor& t) {
  for (float v : t.to_vector())
    if (!std::isnan(v)) return false;
  return true;
}

}  // namespace

// `latest` has a flipped byte in one shard: the load finds it while reading (the one pass), loads
// the previous tag over what it read, and says why. Same with the tag given: an error naming the
// file, and the engine's weights are NaN, never the corrupt tag's.
TEST(CheckpointMpi, FlippedByteFallsBackOrPoisons) {
  comm::Communicator& c = world_comm();
  io::TokenStream data = test::pattern_data();
  std::string dir = shared_dir("flipped");
  nn::GPT a(test::small_gpt());
  a.init_weights(5);
  zero::Engine ea(a, settings(2), &c);
  io::WindowSampler sa(data, 2, 16, 4, c.rank(), c.world());
  run(ea, sa, 2);
  ea.save_checkpoint(dir);
  const std::vector<float> at2 = ea.flat_params().to_vector();
  run(ea, sa, 2);
  ea.save_checkpoint(dir);
  const std::string bad = last_shard(dir, "global_step4");
  flip_byte(bad, -5);  // in Adam's v: read by one rank only at stage 2

  nn::GPT b(test::small_gpt());
  b.init_weights(6);
  zero::Engine eb(b, settings(2), &c);
  zero::LoadResult r = eb.load_checkpoint(dir);
  EXPECT_EQ(r.tag, "global_step2");
  EXPECT_EQ(eb.global_step(), 2);
  EXPECT_TRUE(contains(r.message, "falling back to 'global_step2'")) << r.message;
  EXPECT_TRUE(contains(r.message, bad) && contains(r.message, "corrupt")) << r.message;
  EXPECT_EQ(eb.flat_params().to_vector(), at2);

  nn::GPT f(test::small_gpt());
  f.init_weights(7);
  zero::Engine ef(f, settings(2), &c);
  std::string err;
  try {
    ef.load_checkpoint(dir, "global_step4");
  } catch (const CheckpointError& e) {
    err = e.what();
  }
  EXPECT_TRUE(contains(err, bad) && contains(err, "corrupt") && contains(err, "NaN")) << err;
  EXPECT_TRUE(all_nan(ef.flat_params())) << "a corrupt tag's weights stayed in the engine";
  EXPECT_EQ(ef.global_step(), 0);
  // The previous tag loads over the poisoned state completely.
  ef.load_checkpoint(dir, "global_step2");
  EXPECT_EQ(ef.flat_params().to_vector(), at2);

  // Both tags damaged: no intact checkpoint, one clear error.
  flip_byte(last_shard(dir, "global_step2"), 100);
  err.clear();
  try {
    ef.load_checkpoint(dir);
  } catch (const CheckpointError& e) {
    err = e.what();
  }
  EXPECT_TRUE(contains(err, "no intact checkpoint") && contains(err, "corrupt")) << err;
}

// A truncated shard is found by its size before any byte lands: the engine is untouched.
TEST(CheckpointMpi, TruncatedShardLeavesTheEngineUntouched) {
  comm::Communicator& c = world_comm();
  std::string dir = shared_dir("truncated");
  nn::GPT a(test::small_gpt());
  a.init_weights(5);
  zero::Engine ea(a, settings(1), &c);
  ea.save_checkpoint(dir, "t");
  const std::string shard = last_shard(dir, "t");
  if (c.rank() == 0) fs::resize_file(shard, fs::file_size(shard) - 8);
  c.barrier();
  nn::GPT b(test::small_gpt());
  b.init_weights(6);
  zero::Engine eb(b, settings(1), &c);
  const std::vector<float> before = eb.flat_params().to_vector();
  std::string err;
  try {
    eb.load_checkpoint(dir, "t");
  } catch (const CheckpointError& e) {
    err = e.what();
  }
  EXPECT_TRUE(contains(err, shard) && contains(err, "truncated")) << err;
  EXPECT_EQ(eb.flat_params().to_vector(), before);
  err.clear();
  try {
    eb.load_checkpoint(dir);
  } catch (const CheckpointError& e) {
    err = e.what();
  }
  EXPECT_TRUE(contains(err, "no intact checkpoint") && contains(err, "truncated")) << err;
  EXPECT_EQ(eb.flat_params().to_vector(), before);
}

// load_module_only reads only the weights of every shard, so no rank reads a file whole: the
// elected verifier still reads and checks all of it (a flip in Adam's v, which nobody loads).
TEST(CheckpointMpi, PartlyReadShardsAreStillVerified) {
  comm::Communicator& c = world_comm();
  std::string dir = shared_dir("module_only");
  nn::GPT a(test::small_gpt());
  a.init_weights(5);
  zero::Engine ea(a, settings(2), &c);
  ea.save_checkpoint(dir, "t");
  const std::vector<float> saved = ea.flat_params().to_vector();
  nn::GPT b(test::small_gpt());
  b.init_weights(6);
  zero::Engine eb(b, settings(0), &c);
  zero::LoadOptions o;
  o.load_module_only = true;
  eb.load_checkpoint(dir, "t", o);
  EXPECT_EQ(eb.flat_params().to_vector(), saved);
  flip_byte(last_shard(dir, "t"), -1);
  std::string err;
  try {
    eb.load_checkpoint(dir, "t", o);
  } catch (const CheckpointError& e) {
    err = e.what();
  }
  EXPECT_TRUE(contains(err, last_shard(dir, "t")) && contains(err, "corrupt")) << err;
}
