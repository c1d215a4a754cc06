// tests/zero/test_offload.cpp: zero/offload.h. The offloaded Adam/AdamW step (device cpu and
// nvme, several sub_group_size values including ones that do not divide the partition, every
// buffer_count from 1 to 4, pipelined or not) gives bit for bit the params, m and v of
// optim::make_adam over several steps; the per-sub-group callback sees every parameter once, in
// order, with the updated values; state access for checkpoints; memory accounting; config keys.
#include "core/error.h"
#include "zero/offload.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using zt::io::OffloadDevice;
using zt::zero::OffloadOptions;
using zt::zero::OptimizerOffload;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "zt_offload_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

zt::optim::AdamParams adam_params(bool adam_w_mode) {
  zt::optim::AdamParams a;
  a.beta1 = 0.85f;
  a.beta2 = 0.995f;
  a.eps = 1e-7f;
  a.weight_decay = 0.05f;
  a.adam_w_mode = adam_w_mode;
  return a;
}

struct Case {
  OffloadDevice device;
  int64_t sub_group_size;
  int64_t buffer_count;
  bool pipeline = true;
  bool adam_w_mode = true;
};

std::string name(const Case& c) {
  return std::string(c.device == OffloadDevice::kCpu ? "cpu" : "nvme") + " sub_group_size " +
         std::to_string(c.sub_group_size) + " buffer_count " + std::to_string(c.buffer_count) +
         (c.pipeline ? " pipelined" : " not pipelined") + (c.adam_w_mode ? " AdamW" : " Adam");
}

// Four steps of the offload against make_adam on the same data; params, m, v compared bitwise.
// With c.sub_group_size 0, `starts` are the parameters' beginnings (one sub-group per parameter)
// and the callbacks must arrive exactly at them.
void run(const Case& c, int64_t n, const std::vector<int64_t>& starts = {}) {
  SCOPED_TRACE(name(c));
  TempDir dir;
  const zt::optim::AdamParams ap = adam_params(c.adam_w_mode);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  std::vector<float> p(static_cast<size_t>(n));
  for (float& x : p) x = nd(rng);
  // Decay on matrices, not on a bias-like run in the middle; a gap no segment covers at the end
  // (padding: neither optimizer touches it).
  const int64_t a = n * 4 / 10, b = n * 5 / 10, end = n - 3;
  const std::vector<zt::optim::Segment> segs = {
      {0, a, true}, {a, b - a, false}, {b, end - b, true}};

  auto ref = zt::optim::make_adam(ap);
  ref->init(n);
  std::vector<float> ref_p = p;

  OffloadOptions opt;
  opt.device = c.device;
  opt.nvme_path = dir.path.string();
  opt.rank = 3;
  opt.sub_group_size = c.sub_group_size;
  opt.param_starts = starts;
  opt.buffer_count = c.buffer_count;
  opt.pipeline_read = opt.pipeline_write = c.pipeline;
  opt.aio.block_size = 64 * 1024;  // several blocks per sub-group
  opt.aio.thread_count = 2;
  OptimizerOffload off(ap, n, opt);
  off.write_state("master", 0, n, p.data());
  if (c.device == OffloadDevice::kNvme) {
    EXPECT_TRUE(fs::exists(dir.path / "zerotrain_rank3" / "optimizer.swp"));
    EXPECT_EQ(off.swap_path(), (dir.path / "zerotrain_rank3" / "optimizer.swp").string());
  }

  std::vector<float> model(static_cast<size_t>(n), -1.f);  // what the callbacks deliver
  for (int t = 1; t <= 4; ++t) {
    std::vector<float> g(static_cast<size_t>(n));
    for (float& x : g) x = nd(rng) * 0.1f;
    const float lr = 1e-2f * static_cast<float>(t);
    ref->step(ref_p.data(), g.data(), n, segs, lr);
    int64_t next = 0;
    size_t call = 0;
    off.step(g.data(), segs, lr, [&](int64_t offset, int64_t count, const float* master) {
      EXPECT_EQ(offset, next);
      if (c.sub_group_size == 0) {
        EXPECT_EQ(offset, call == 0 ? 0 : starts[call - 1]) << "sub-group " << call;
        EXPECT_EQ(offset + count, call < starts.size() ? starts[call] : n) << "sub-group " << call;
      }
      ++call;
      EXPECT_LE(count, off.sub_group_size());
      std::memcpy(model.data() + offset, master, static_cast<size_t>(count) * sizeof(float));
      next = offset + count;
    });
    EXPECT_EQ(next, n);
    if (c.sub_group_size == 0) {
      EXPECT_EQ(call, starts.size() + 1);
    }
    EXPECT_TRUE(same_bits(model, ref_p)) << "callback values differ at step " << t;
  }
  EXPECT_EQ(off.step_count(), 4);
  std::vector<float> got(static_cast<size_t>(n));
  off.read_state("master", 0, n, got.data());
  EXPECT_TRUE(same_bits(got, ref_p)) << "master";
  auto st = ref->state();
  off.read_state("exp_avg", 0, n, got.data());
  EXPECT_TRUE(same_bits(got, *st[0].second)) << "exp_avg";
  off.read_state("exp_avg_sq", 0, n, got.data());
  EXPECT_TRUE(same_bits(got, *st[1].second)) << "exp_avg_sq";
}

constexpr int64_t kN = 50'003;  // prime: no sub_group_size below divides it

TEST(OptimizerOffload, CpuMatchesInMemoryAdamBitwise) {
  for (int64_t sg : {int64_t{1'000'000'000}, int64_t{16'384}, int64_t{7'777}, kN}) {
    run({OffloadDevice::kCpu, sg, 4}, kN);
  }
  run({OffloadDevice::kCpu, 9'999, 4, true, false}, kN);  // Adam with L2 decay
}

TEST(OptimizerOffload, NvmeMatchesInMemoryAdamBitwise) {
  for (int64_t sg : {int64_t{1'000'000'000}, int64_t{16'384}, int64_t{7'777}, int64_t{1'000}}) {
    for (int64_t buffers : {1, 2, 3, 4}) {
      run({OffloadDevice::kNvme, sg, buffers}, kN);
    }
  }
  run({OffloadDevice::kNvme, 4'096, 3, false}, kN);        // not pipelined
  run({OffloadDevice::kNvme, 7'777, 2, true, false}, kN);  // Adam with L2 decay
  run({OffloadDevice::kNvme, 5, 2}, 101);                  // tiny sub-groups, many slots
}

// sub_group_size 0 (axolotl's zero3_bf16_cpuoffload_all.json): DeepSpeed closes a sub-group after
// every parameter; here the engine passes where the parameters begin. Uneven sizes: a big matrix,
// a tiny bias (one 4 KiB slot), a piece that does not fill its slot.
TEST(OptimizerOffload, OneSubGroupPerParameterWithSubGroupSizeZero) {
  const std::vector<int64_t> starts = {30'000, 30'017, 41'000};
  for (OffloadDevice dev : {OffloadDevice::kCpu, OffloadDevice::kNvme}) {
    for (int64_t buffers : {1, 2, 4}) run({dev, 0, buffers}, kN, starts);
  }
  TempDir dir;
  OffloadOptions opt;
  opt.device = OffloadDevice::kNvme;
  opt.nvme_path = dir.path.string();
  opt.sub_group_size = 0;
  opt.param_starts = starts;
  OptimizerOffload off(zt::optim::AdamParams{}, kN, opt);
  EXPECT_EQ(off.num_sub_groups(), 4);
  EXPECT_EQ(off.sub_group_size(), 30'000);  // the largest
  EXPECT_EQ(off.sub_group_begin(2), 30'017);
  // Slots: 120,000 -> 122,880 bytes; 68 -> 4,096; 43,932 -> 45,056; 36,012 -> 36,864.
  EXPECT_EQ(off.memory().file_bytes, 3 * (122'880 + 4'096 + 45'056 + 36'864));
  EXPECT_NE(off.describe().find("one per parameter"), std::string::npos) << off.describe();
  opt.param_starts = {5, 5};
  EXPECT_THROW(OptimizerOffload(zt::optim::AdamParams{}, 10, opt), zt::Error);
}

TEST(OptimizerOffload, StateRangesRoundTripAcrossSubGroups) {
  for (OffloadDevice dev : {OffloadDevice::kCpu, OffloadDevice::kNvme}) {
    TempDir dir;
    OffloadOptions opt;
    opt.device = dev;
    opt.nvme_path = dir.path.string();
    opt.sub_group_size = 1'000;
    const int64_t n = 4'321;
    OptimizerOffload off(zt::optim::AdamParams{}, n, opt);
    std::vector<float> zeros(n), got(n), src(n);
    off.read_state("exp_avg", 0, n, got.data());
    EXPECT_TRUE(same_bits(got, zeros)) << "m starts at zero";
    for (int64_t i = 0; i < n; ++i) src[static_cast<size_t>(i)] = static_cast<float>(i) + 0.5f;
    // Writes of ranges that start and end inside sub-groups keep their neighbours.
    off.write_state("exp_avg_sq", 0, n, src.data());
    std::vector<float> part = {-1.f, -2.f, -3.f};
    off.write_state("exp_avg_sq", 998, 3, part.data());
    src[998] = -1.f;
    src[999] = -2.f;
    src[1000] = -3.f;
    off.read_state("exp_avg_sq", 0, n, got.data());
    EXPECT_TRUE(same_bits(got, src));
    std::vector<float> mid(2'500);
    off.read_state("exp_avg_sq", 1'500, 2'500, mid.data());
    EXPECT_EQ(mid[0], 1'500.5f);
    EXPECT_EQ(mid[2'499], 3'999.5f);
    off.read_state("master", 0, n, got.data());
    EXPECT_TRUE(same_bits(got, zeros)) << "other states untouched";
    EXPECT_THROW(off.read_state("momentum", 0, 1, got.data()), zt::Error);
    EXPECT_THROW(off.write_state("master", n - 1, 2, src.data()), zt::Error);
  }
}

TEST(OptimizerOffload, MemoryAccountingAndCleanup) {
  TempDir dir;
  const int64_t n = 10'000;
  {
    OffloadOptions cpu;
    cpu.pin_memory = true;  // mlock, or one warning line and pageable memory
    OptimizerOffload off(zt::optim::AdamParams{}, n, cpu);
    EXPECT_GE(off.memory().host_bytes, 3 * 40'000);  // 3 states, each padded to 4 KiB + 256
    EXPECT_LE(off.memory().host_bytes, 3 * 40'960 + 4'096);
    EXPECT_EQ(off.memory().file_bytes, 0);
    EXPECT_FALSE(off.on_nvme());
  }
  OffloadOptions nv;
  nv.device = OffloadDevice::kNvme;
  nv.nvme_path = dir.path.string();
  nv.rank = 1;
  nv.sub_group_size = 3'000;  // 4 sub-groups, stride 12 KiB
  nv.buffer_count = 3;
  {
    OptimizerOffload off(zt::optim::AdamParams{}, n, nv);
    EXPECT_EQ(off.num_sub_groups(), 4);
    EXPECT_EQ(off.memory().host_bytes, 3 * 3 * 12'288);
    EXPECT_EQ(off.memory().file_bytes, 3 * (3 * 12'288 + 4'096));  // the last slot 1,000 floats
    EXPECT_EQ(static_cast<int64_t>(fs::file_size(off.swap_path())), off.memory().file_bytes);
    EXPECT_NE(off.describe().find("nvme"), std::string::npos) << off.describe();
  }
  EXPECT_FALSE(fs::exists(dir.path / "zerotrain_rank1")) << "the destructor removes its files";
  nv.buffer_count = 9;  // more buffers than sub-groups: only 4 are made
  OptimizerOffload off(zt::optim::AdamParams{}, n, nv);
  EXPECT_EQ(off.memory().host_bytes, 4 * 3 * 12'288);
}

TEST(OptimizerOffload, UnusableNvmePathIsNamed) {
  TempDir dir;
  const fs::path file = dir.path / "a_file";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    std::fclose(f);
  }
  OffloadOptions nv;
  nv.device = OffloadDevice::kNvme;
  nv.nvme_path = file.string();  // a file, not a directory
  try {
    OptimizerOffload off(zt::optim::AdamParams{}, 100, nv);
    ADD_FAILURE() << "no error";
  } catch (const zt::Error& e) {
    EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nvme_path"), std::string::npos) << e.what();
  }
}

TEST(OptimizerOffload, ConfigKeys) {
  zt::io::Config cfg;
  cfg.zero.stage = 3;
  cfg.zero.sub_group_size = 123;
  cfg.zero.offload_optimizer.device = OffloadDevice::kNvme;
  cfg.zero.offload_optimizer.nvme_path = "/x";
  cfg.zero.offload_optimizer.buffer_count = 2;
  cfg.zero.offload_optimizer.pipeline_read = true;
  cfg.zero.offload_optimizer.fast_init = true;  // accepted: initialisation is always fast
  cfg.aio.block_size = 8192;
  OffloadOptions o = zt::zero::offload_options(cfg, 5);
  EXPECT_EQ(o.rank, 5);
  EXPECT_EQ(o.sub_group_size, 123);
  EXPECT_EQ(o.buffer_count, 2);
  EXPECT_TRUE(o.pipeline_read);
  EXPECT_FALSE(o.pipeline_write);
  EXPECT_EQ(o.aio.block_size, 8192);
  cfg.zero.offload_optimizer.ratio = 0.5;
  try {
    zt::zero::offload_options(cfg, 0);
    ADD_FAILURE() << "ratio 0.5 accepted";
  } catch (const zt::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("offload_optimizer.ratio"), std::string::npos);
  }
  cfg.zero.offload_optimizer.ratio = 1.0;
  cfg.zero.offload_optimizer.buffer_count = 0;
  EXPECT_THROW(zt::zero::offload_options(cfg, 0), zt::ConfigError);
}

}  // namespace
