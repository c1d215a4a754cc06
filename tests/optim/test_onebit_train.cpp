// tests/optim/test_onebit_train.cpp: the 1-bit optimizers through the engine (ZeRO stage 0) on the
// small GPT of tests/zero, under mpiexec at 1, 2 and 4 ranks:
//   - before freeze_step, OneBitAdam trains bit for bit like AdamW (the engine all-reduces);
//   - after it, the engine no longer all-reduces gradients (the comm log shows all_to_all and
//     all_gather of packed signs instead), and the parameters stay identical on every rank;
//   - a resume after the compression started is bitwise: N steps straight vs N/2, save, a fresh
//     engine loads, N/2 more: the same losses and weights bit for bit, for all three (their
//     per-rank state: error buffers, OneBitLamb's per-tensor scalars, ZeroOneAdam's local drift,
//     saved mid-interval on purpose);
//   - OneBitAdam, ZeroOneAdam and OneBitLamb reach, after 150 steps at 2 and 4 ranks, a loss
//     within a stated margin of AdamW's on the same data (figures printed; margins in the test);
//   - the compressed stage runs two collectives per step whatever the number of tensors, with
//     the bytes of the wire format (one scale per tensor per block).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/compressed.h"
#include "io/data.h"
#include "tests/zero/engine_test_util.h"
#include "zero/engine.h"

namespace zt {
namespace {

comm::Communicator& world() {
  static std::unique_ptr<comm::Communicator> c = comm::make_mpi_communicator();
  return *c;
}

double mean_over_ranks(double v) {
  Tensor t = Tensor::from_vector({static_cast<float>(v)}, {1});
  world().all_reduce(t, comm::ReduceOp::avg)->wait();
  return t.data<float>()[0];
}

zero::EngineSettings settings(optim::OptimizerKind kind) {
  zero::EngineSettings s;
  s.zero_stage = 0;
  s.micro_batch = 2;
  s.gradient_clipping = 1.0;
  s.scheduler = optim::make_warmup_lr({0.0, 1e-2, 5, optim::WarmupType::linear});
  s.optimizer_kind = kind;
  s.adam.weight_decay = 0.01f;
  s.onebit.weight_decay = 0.01f;
  s.onebit.freeze_step = 40;
  s.onebit.var_freeze_step = 60;
  s.onebit.var_update_scaler = 4;
  s.onebit.local_step_scaler = 10;
  s.onebit.local_step_clipper = 4;
  return s;
}

struct TrainRun {
  std::vector<double> losses;  // mean over ranks, per step
  std::vector<float> params;
};

TrainRun train(const zero::EngineSettings& s, int steps) {
  comm::Communicator& c = world();
  nn::GPT model(test::small_gpt());
  model.init_weights(42);
  zero::Engine eng(model, s, &c);
  io::TokenStream data = test::pattern_data();
  io::WindowSampler sampler(data, s.micro_batch, 16, 7, c.rank(), c.world());
  Tensor ids, tgt;
  TrainRun r;
  for (int i = 0; i < steps; ++i) {
    sampler.next(ids, tgt);
    const float loss = eng.forward(ids, tgt);
    eng.backward();
    eng.step();
    r.losses.push_back(mean_over_ranks(loss));
  }
  r.params = eng.flat_params().to_vector();
  return r;
}

double tail_mean(const std::vector<double>& v, int k) {
  double s = 0;
  for (size_t i = v.size() - k; i < v.size(); ++i) s += v[i];
  return s / k;
}

// Engine::set_exp_avg_mask: token-embedding rows of ids the data never contains get no gradient
// (the head is untied), so with the mask their momentum stays zero and the rows keep their initial
// values through the compressed stage; without it, on 2+ ranks, the compression error moves them.
TEST(OneBitTrain, ExpAvgMaskKeepsUnusedEmbeddingRows) {
  comm::Communicator& c = world();
  nn::GPTConfig cfg = test::small_gpt();
  cfg.vocab_size = 80;  // pattern_data uses ids 0..63: rows 64..79 never see a gradient
  cfg.tie_weights = false;
  for (optim::OptimizerKind kind : {optim::OptimizerKind::onebit_adam, optim::OptimizerKind::onebit_lamb}) {
    for (bool masked : {true, false}) {
      zero::EngineSettings s = settings(kind);
      s.onebit.freeze_step = 4;
      s.onebit.weight_decay = 0.f;  // wte decays (a matrix): only the momentum may move its rows
      nn::GPT model(cfg);
      model.init_weights(42);
      zero::Engine eng(model, s, &c);
      Tensor mask = Tensor::zeros({80, cfg.n_embd});
      float* m = mask.data<float>();
      for (int64_t i = 0; i < 64 * cfg.n_embd; ++i) m[i] = 1.f;
      if (masked) eng.set_exp_avg_mask("wte.weight", mask);
      auto wte = [&model] {
        for (nn::Parameter* p : model.parameters())
          if (p->name == "wte.weight") return p->value.to_vector();
        return std::vector<float>{};
      };
      const std::vector<float> before = wte();
      io::TokenStream data = test::pattern_data();
      io::WindowSampler sampler(data, s.micro_batch, 16, 7, c.rank(), c.world());
      Tensor ids, tgt;
      for (int i = 0; i < 12; ++i) {
        sampler.next(ids, tgt);
        eng.forward(ids, tgt);
        eng.backward();
        eng.step();
      }
      const std::vector<float> after = wte();
      ASSERT_EQ(after.size(), size_t(80 * cfg.n_embd));
      double unused = 0, used = 0;  // the largest change of a row never seen / seen in the data
      for (size_t i = 0; i < after.size(); ++i) {
        double& worst = i >= size_t(64 * cfg.n_embd) ? unused : used;
        worst = std::max(worst, std::abs(double(after[i]) - before[i]));
      }
      SCOPED_TRACE(eng.optimizer().name() + (masked ? " with the mask" : " without"));
      EXPECT_GT(used, 0.0) << "the rows of ids in the data train";
      if (masked) {
        EXPECT_EQ(unused, 0.0);
      } else if (c.world() > 1) {
        EXPECT_GT(unused, 0.0) << "compression error moves the rows no gradient reaches";
      }
    }
  }
  zero::EngineSettings s = settings(optim::OptimizerKind::onebit_adam);
  nn::GPT model(cfg);
  zero::Engine eng(model, s, &c);
  EXPECT_THROW(eng.set_exp_avg_mask("wte.weights", Tensor::zeros({80, cfg.n_embd})), zt::Error);
  EXPECT_THROW(eng.set_exp_avg_mask("wte.weight", Tensor::zeros({64, cfg.n_embd})), zt::Error);
}

TEST(OneBitTrain, WarmupIsAdamWBitwise) {
  zero::EngineSettings a = settings(optim::OptimizerKind::adam);
  zero::EngineSettings b = settings(optim::OptimizerKind::onebit_adam);
  b.onebit.freeze_step = 1000;
  TrainRun ra = train(a, 12), rb = train(b, 12);
  EXPECT_EQ(ra.losses, rb.losses);
  EXPECT_EQ(ra.params, rb.params);
}

TEST(OneBitTrain, CompressedStageSkipsTheGradientAllReduce) {
  comm::Communicator& c = world();
  zero::EngineSettings s = settings(optim::OptimizerKind::onebit_adam);
  s.onebit.freeze_step = 3;
  nn::GPT model(test::small_gpt());
  model.init_weights(42);
  zero::Engine eng(model, s, &c);
  io::TokenStream data = test::pattern_data();
  io::WindowSampler sampler(data, s.micro_batch, 16, 7, c.rank(), c.world());
  Tensor ids, tgt;
  for (int i = 0; i < 3; ++i) {  // warm-up
    sampler.next(ids, tgt);
    eng.forward(ids, tgt);
    eng.backward();
    eng.step();
  }
  c.log().set_enabled(true);
  c.log().clear();
  for (int i = 0; i < 4; ++i) {  // compressed
    sampler.next(ids, tgt);
    eng.forward(ids, tgt);
    eng.backward();
    eng.step();
  }
  int64_t big_all_reduce = 0, a2a = 0, a2a_bytes = 0, gathers = 0, gather_bytes = 0;
  for (const auto& e : c.log().entries()) {
    if (e.op == "all_reduce" && e.bytes > 64) big_all_reduce += e.calls;
    if (e.op == "all_to_all") {
      a2a += e.calls;
      a2a_bytes += e.bytes * e.calls;
    }
    if (e.op == "all_gather") {
      gathers += e.calls;
      gather_bytes += e.bytes * e.calls;
    }
  }
  c.log().set_enabled(false);
  EXPECT_EQ(big_all_reduce, 0) << "the gradient was all-reduced in the compressed stage";
  if (c.world() > 1) {
    // Two collectives per step, whatever the number of tensors: all pieces' scales travel in
    // the blocks of packed signs (comm/compressed.h).
    EXPECT_EQ(a2a, 4);
    EXPECT_EQ(gathers, 4);
    // One piece per model tensor: each block is T scales + the signs of every tensor's chunk.
    std::vector<int64_t> pieces;
    for (nn::Parameter* p : model.parameters()) pieces.push_back(p->value.numel());
    comm::CompressedAllReduce expect(c, pieces);
    EXPECT_EQ(expect.pieces(), static_cast<int64_t>(model.parameters().size()));
    const int64_t block = expect.words_per_block() * 4;
    EXPECT_EQ(a2a_bytes, 4 * c.world() * block);
    EXPECT_EQ(gather_bytes, 4 * c.world() * block);
    // n / 8 bytes of signs per step for n parameters, plus per block 4 bytes of scale per
    // tensor, at most world - 1 bytes of padding per tensor and a last partial word
    EXPECT_LE(
        static_cast<double>(a2a_bytes) / 4,
        eng.flat_params().numel() / 8.0 + 5.0 * c.world() * expect.pieces() + 4.0 * c.world());
  }
  Tensor mine = eng.flat_params().clone(), root = mine.clone();
  c.broadcast(root, 0)->wait();
  EXPECT_EQ(mine.to_vector(), root.to_vector()) << "parameters differ between ranks";
}

// A folder shared by all ranks (one per world size: the np1/np2/np4 runs may overlap).
std::string shared_dir(const std::string& name) {
  namespace fs = std::filesystem;
  const std::string d = (fs::temp_directory_path() /
                         ("zt_onebit_" + name + "_np" + std::to_string(world().world())))
                            .string();
  if (world().rank() == 0) {
    fs::remove_all(d);
    fs::create_directories(d);
  }
  world().barrier();
  return d;
}

// Steps [from, to) of a run on `eng`, the sampler already positioned at step `from`.
void run_steps(zero::Engine& eng, io::WindowSampler& sampler, int from, int to, TrainRun& r) {
  Tensor ids, tgt;
  for (int i = from; i < to; ++i) {
    sampler.next(ids, tgt);
    const float loss = eng.forward(ids, tgt);
    eng.backward();
    eng.step();
    r.losses.push_back(mean_over_ranks(loss));
  }
}

TEST(OneBitTrain, ResumeAfterFreezeIsBitwise) {
  comm::Communicator& c = world();
  const int steps = 18, half = 9;
  for (optim::OptimizerKind kind : {optim::OptimizerKind::onebit_adam,
                                    optim::OptimizerKind::zero_one_adam,
                                    optim::OptimizerKind::onebit_lamb}) {
    zero::EngineSettings s = settings(kind);
    // Compression from step 5; ZeroOneAdam: v frozen after 6, syncs at 7, 8, 10, 12, 16: step 9
    // (the save) is between two syncs, where the ranks' weights, m and u differ.
    s.onebit.freeze_step = 4;
    s.onebit.var_freeze_step = 6;
    s.onebit.var_update_scaler = 2;
    s.onebit.local_step_scaler = 2;
    s.onebit.local_step_clipper = 4;
    TrainRun straight = train(s, steps);

    const std::string dir = shared_dir("resume" + std::to_string(static_cast<int>(kind)));
    io::TokenStream data = test::pattern_data();
    io::WindowSampler sampler(data, s.micro_batch, 16, 7, c.rank(), c.world());
    TrainRun resumed;
    {
      nn::GPT model(test::small_gpt());
      model.init_weights(42);
      zero::Engine eng(model, s, &c);
      run_steps(eng, sampler, 0, half, resumed);
      eng.save_checkpoint(dir);
    }
    nn::GPT model(test::small_gpt());
    model.init_weights(7);  // other weights: the load must replace them all
    zero::Engine eng(model, s, &c);
    eng.load_checkpoint(dir);
    run_steps(eng, sampler, half, steps, resumed);
    resumed.params = eng.flat_params().to_vector();

    const std::string name = eng.optimizer().name();
    EXPECT_EQ(straight.losses, resumed.losses) << name;
    EXPECT_EQ(straight.params, resumed.params) << name;
    if (c.rank() == 0) std::filesystem::remove_all(dir);
  }
}

TEST(OneBitTrain, LossWithinMarginOfAdamW) {
  const int steps = 150, tail = 10;
  const double adamw = tail_mean(train(settings(optim::OptimizerKind::adam), steps).losses, tail);
  struct Case {
    optim::OptimizerKind kind;
    const char* name;
    double margin2, margin4;  // relative, final loss vs AdamW's, at 2 and at 4 ranks
  };
  // Margins from the figures measured (2026-11-23, 150 steps, warm-up/var_freeze 40/60), final
  // loss vs AdamW's; every run is deterministic, so the margins guard against regressions:
  //                 1 rank     2 ranks    4 ranks
  //   OneBitAdam    -2.6%      -10.3%     -1.8%
  //   ZeroOneAdam   +0.9%      -1.8%      +9.9%
  //   OneBitLamb    -10.6%     +36.2%     +104.5%
  // At 1 rank nothing is compressed. OneBitAdam and ZeroOneAdam compress each tensor with its own
  // scales, as DeepSpeed does (comm/compressed.h, "Scale granularity"). With one scale for the
  // whole flat buffer (before that change) ZeroOneAdam ended +20% (2 ranks) and +57% (4 ranks),
  // OneBitAdam -11% / -3%. The likely reason (not isolated further): what ZeroOneAdam compresses,
  // u * denom and its 1-bit-step gradients, differs by orders of magnitude between tensors
  // (embeddings, norms, matrices); one shared scale gives the small tensors steps of the large
  // ones' size, and its local steps let that error act until the next sync.
  // OneBitLamb compresses its fused momentum in one piece, as DeepSpeed does (lamb.py: after
  // scaling each tensor's momentum by scaling_coeff to a common magnitude, one
  // compressed_allreduce of exp_avg_flat), so it is unchanged. Investigated (2026-11-23): against
  // DeepSpeed's lamb.py the step and factor formulas match; uncompressed Lamb itself ends +22%
  // (2 ranks) / +64% (4 ranks) above AdamW at this lr and warm-up, so compression costs
  // OneBitLamb +12% / +25% against Lamb (its reconstructed gradient carries 10x the momentum's
  // compression error into the fresh variance and the scaling factor, which stays in [1.1, 1.3]
  // at 4 ranks against 1.6 at 1 rank). Other rank counts check that each one learns.
  for (const Case& k : {Case{optim::OptimizerKind::onebit_adam, "OneBitAdam", 0.05, 0.05},
                        Case{optim::OptimizerKind::zero_one_adam, "ZeroOneAdam", 0.10, 0.20},
                        Case{optim::OptimizerKind::onebit_lamb, "OneBitLamb", 0.50, 1.30}}) {
    TrainRun r = train(settings(k.kind), steps);
    const double mine = tail_mean(r.losses, tail);
    if (world().rank() == 0)
      std::printf("[ onebit ] %d ranks, %d steps: mean loss of the last %d: AdamW %.4f, %s %.4f "
                  "(%+.2f%%; first loss %.4f)\n",
                  world().world(), steps, tail, adamw, k.name, mine, 100 * (mine / adamw - 1),
                  r.losses.front());
    if (world().world() == 2) {
      EXPECT_LT(mine, adamw * (1 + k.margin2)) << k.name;
    }
    if (world().world() == 4) {
      EXPECT_LT(mine, adamw * (1 + k.margin4)) << k.name;
    }
    EXPECT_LT(mine, 0.8 * r.losses.front()) << k.name << " did not learn";
  }
}

}  // namespace
}  // namespace zt
