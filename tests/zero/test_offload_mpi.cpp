// tests/zero/test_offload_mpi.cpp: offload_optimizer (cpu and nvme) and offload_param (nvme, stage
// 3) through the engine under
// mpiexec at stages 1, 2 and 3: the same losses as one process with stage 0 (the offloaded step is
// the same Adam kernel on the same partition), in sub-groups smaller than the partition; and a
// checkpoint of an offloaded run continues exactly like the run that was not stopped.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "comm/communicator.h"
#include "core/ops.h"
#include "tests/zero/engine_compare.h"
#include "zero/engine.h"

using namespace zt;
using test::base;
using test::compare;
using test::world_comm;

namespace {

// A directory every rank agrees on (rank 0's pid), removed at the end.
std::string shared_tmp(const char* what) {
  Tensor t = Tensor::from_vector({static_cast<float>(getpid() % 1000000)}, {1});
  world_comm().broadcast(t, 0)->wait();
  return "/tmp/zt_" + std::string(what) + "_" + std::to_string(static_cast<int>(t.data<float>()[0]));
}

zero::EngineSettings offloaded(int stage, io::OffloadDevice dev, const std::string& path,
                               int64_t sub_group) {
  auto s = base(stage, 2, 1);
  zero::OffloadOptions o;
  o.device = dev;
  o.nvme_path = path;
  o.sub_group_size = sub_group;
  o.buffer_count = 3;
  s.offload_optimizer = o;
  return s;
}

}  // namespace

TEST(OffloadMpi, CpuStages123MatchOneProcess) {
  for (int stage : {1, 2, 3}) compare(offloaded(stage, io::OffloadDevice::kCpu, "", 1000), 12);
}

TEST(OffloadMpi, NvmeStages123MatchOneProcess) {
  const std::string dir = shared_tmp("nvme");
  for (int stage : {1, 2, 3}) compare(offloaded(stage, io::OffloadDevice::kNvme, dir, 2500), 12);
  // sub_group_size 0: one sub-group per parameter piece (DeepSpeed's reading; axolotl's config)
  compare(offloaded(2, io::OffloadDevice::kNvme, dir, 0), 12);
  world_comm().barrier();
  if (world_comm().rank() == 0) std::filesystem::remove_all(dir);
}

TEST(OffloadMpi, Bf16NvmeStage3MatchesOneProcess) {
  const std::string dir = shared_tmp("nvme16");
  auto s = offloaded(3, io::OffloadDevice::kNvme, dir, 3000);
  s.model_dtype = DType::bf16;
  compare(s, 12, 2e-3, 5e-3);
  world_comm().barrier();
  if (world_comm().rank() == 0) std::filesystem::remove_all(dir);
}

// offload_param nvme (ZeRO-Infinity): the weight partitions live in swap files, read piece by piece
// for each gather; with and without offload_optimizer, fp32 and bf16: the same losses.
TEST(OffloadMpi, ParamsOnNvmeStage3MatchOneProcess) {
  const std::string dir = shared_tmp("params");
  for (bool opt_too : {false, true})
    for (DType dt : {DType::f32, DType::bf16}) {
      auto s = opt_too ? offloaded(3, io::OffloadDevice::kNvme, dir, 2500) : base(3, 2, 1);
      s.offload_param_nvme_path = dir;
      s.model_dtype = dt;
      s.overlap_comm = true;
      if (dt == DType::f32) compare(s, 12);
      else compare(s, 12, 2e-3, 5e-3);
    }
  world_comm().barrier();
  if (world_comm().rank() == 0) std::filesystem::remove_all(dir);
}

// Train 6 steps, save, train 6 more; a fresh engine loads the save and trains the same 6 steps:
// the same losses and weights bit for bit (the offloaded m, v and master went through the file).
TEST(OffloadMpi, CheckpointOfAnOffloadedRunContinuesExactly) {
  comm::Communicator& c = world_comm();
  const std::string dir = shared_tmp("ckpt"), swap = shared_tmp("swap");
  for (bool mixed : {false, true}) {
    auto s = offloaded(3, io::OffloadDevice::kNvme, swap, 2000);
    if (mixed) s.model_dtype = DType::bf16;
    s.offload_param_nvme_path = swap;  // the weights on the drive too
    io::TokenStream data = test::pattern_data();
    auto train = [&](zero::Engine& e, io::WindowSampler& smp, int steps) {
      std::vector<float> losses;
      Tensor ids, tgt;
      for (int i = 0; i < steps; ++i) {
        smp.next(ids, tgt);
        losses.push_back(e.forward(ids, tgt));
        e.backward();
        e.step();
      }
      return losses;
    };
    nn::GPT m1(test::small_gpt());
    m1.init_weights(9);
    zero::Engine e1(m1, s, &c);
    io::WindowSampler smp1(data, 2, 16, 5, c.rank(), c.world());
    train(e1, smp1, 6);
    e1.save_checkpoint(dir, "mid");
    io::WindowSampler smp2 = smp1;
    std::vector<float> want = train(e1, smp1, 6);

    nn::GPT m2(test::small_gpt());
    m2.init_weights(77);  // different weights: all must come from the checkpoint
    zero::Engine e2(m2, s, &c);
    e2.load_checkpoint(dir, "mid");
    std::vector<float> got = train(e2, smp2, 6);
    EXPECT_EQ(got, want) << (mixed ? "bf16" : "f32");
    auto f32 = [](const Tensor& t) {
      Tensor out = Tensor::empty({t.numel()});
      ops::copy(t, out);
      return out.to_vector();
    };
    EXPECT_EQ(f32(e2.model_params()), f32(e1.model_params()));
    c.barrier();
    if (c.rank() == 0) std::filesystem::remove_all(dir);
    c.barrier();
  }
  if (c.rank() == 0) std::filesystem::remove_all(swap);
}
