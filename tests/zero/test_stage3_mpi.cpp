// tests/zero/test_stage3_mpi.cpp: ZeRO stage 3 under mpiexec trains the same model as one process
// with stage 0 (losses step by step, weights at the end), with every knob of the parameter
// coordinator (prefetch, persistence, max live, reuse distance, overlap), gradient accumulation,
// bf16, activation checkpointing (recompute gathers again) and Lamb; the knobs change memory but
// not the numbers; model-state bytes are the formula's 1/N. (Ranks that run units in different
// orders: tests/zero/stage3_order_mismatch.cpp, a job that must end with a message.)
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "comm/communicator.h"
#include "tests/zero/engine_compare.h"
#include "zero/engine.h"

using namespace zt;
using test::base;
using test::compare;
using test::world_comm;

namespace {

// Tight settings: nothing kept, nothing prefetched beyond one block, nothing persistent.
zero::EngineSettings lean(zero::EngineSettings s) {
  s.stage3_prefetch_bucket_size = 4000;
  s.stage3_max_live_parameters = 8000;
  s.stage3_max_reuse_distance = 0;
  s.stage3_param_persistence_threshold = 0;
  return s;
}

// Trains a few steps and returns the coordinator's pool peak and gather counts.
struct Outcome {
  int64_t pool_peak = 0, gathers = 0, hits = 0;
  std::vector<float> params;
};
Outcome run(const zero::EngineSettings& s, int steps) {
  comm::Communicator& c = world_comm();
  nn::GPT m(test::small_gpt());
  m.init_weights(3);
  zero::Engine e(m, s, &c);
  io::TokenStream data = test::pattern_data();
  io::WindowSampler sampler(data, s.micro_batch, 16, 11, c.rank(), c.world());
  Tensor ids, tgt;
  for (int i = 0; i < steps * s.gradient_accumulation_steps; ++i) {
    sampler.next(ids, tgt);
    e.forward(ids, tgt);
    e.backward();
    e.step();
  }
  Outcome r;
  r.pool_peak = e.coordinator()->pool_peak_bytes();
  r.gathers = e.coordinator()->gathers();
  r.hits = e.coordinator()->prefetch_hits();
  r.params = e.model_params().to_vector();
  return r;
}

}  // namespace

TEST(Stage3Mpi, MatchesOneProcess) { compare(base(3, 2, 1)); }

TEST(Stage3Mpi, OverlapAndLeanSettingsMatchOneProcess) {
  auto s = lean(base(3, 2, 1));
  s.overlap_comm = true;
  compare(s);
}

TEST(Stage3Mpi, AccumulationReducesEveryMicroBatch) {
  auto s = base(3, 1, 3);
  s.overlap_comm = true;
  compare(s, 10);
}

TEST(Stage3Mpi, Bf16MatchesOneProcessToBf16Precision) {
  auto s = base(3, 2, 1);
  s.model_dtype = DType::bf16;
  s.overlap_comm = true;
  compare(s, 20, 2e-3, 5e-3);
}

TEST(Stage3Mpi, Fp16WithLossScaleMatchesOneProcess) {
  auto s = lean(base(3, 2, 1));
  s.model_dtype = DType::f16;
  s.loss_scaler.initial_scale_power = 12;
  compare(s, 20, 2e-3, 5e-3);
}

TEST(Stage3Mpi, LambTrustRatiosOverPartitionsMatchOneProcess) {
  auto s = base(3, 2, 1);
  s.optimizer_kind = optim::OptimizerKind::lamb;
  s.lamb.weight_decay = 0.01f;
  compare(s, 15, 1e-5, 1e-4);
}

TEST(Stage3Mpi, ActivationCheckpointingGathersAgainForTheRecompute) {
  nn::GPTConfig cfg = test::small_gpt();
  cfg.n_layer = 3;
  cfg.checkpoint_activations = true;
  cfg.number_checkpoints = 2;
  compare(lean(base(3, 2, 1)), 15, 1e-5, 1e-4, cfg);
}

// The knobs trade memory (and gathers) for time; the weights come out bitwise the same: every
// gather is a copy of the same partitions, every reduction the same collective on the same bytes.
TEST(Stage3Mpi, KnobsChangeMemoryNotResults) {
  auto generous = base(3, 2, 1);  // DeepSpeed's defaults: everything prefetched and kept
  generous.overlap_comm = true;
  auto tight = lean(generous);
  Outcome g = run(generous, 4), t = run(tight, 4);
  EXPECT_EQ(g.params, t.params) << "prefetch / persistence / max-live changed the weights";
  EXPECT_LT(t.pool_peak, g.pool_peak) << "the tight settings should gather less at once";
  EXPECT_GT(t.gathers, g.gathers) << "without reuse and persistence units are gathered more often";
  if (world_comm().world() > 1) {
    EXPECT_GT(g.hits, 0) << "after the first step the recorded order should let gathers prefetch";
  }
  ::testing::Test::RecordProperty("pool_peak_generous", std::to_string(g.pool_peak));
  ::testing::Test::RecordProperty("pool_peak_tight", std::to_string(t.pool_peak));
}

// Model states per rank: every term of 4 + 4 + 8 bytes per parameter (fp32 Adam) divided by N,
// padding aside; at 4 ranks at most 1/3.5 of stage 0's.
TEST(Stage3Mpi, ModelStatesAreTheFormulasOneNth) {
  comm::Communicator& c = world_comm();
  const int W = c.world();
  nn::GPT m0(test::small_gpt()), m3(test::small_gpt());
  zero::Engine e0(m0, base(0, 2, 1), &c), e3(m3, base(3, 2, 1), &c);
  auto held = e3.model_state_bytes(), f = e3.model_state_formula();
  const int64_t pad = (e3.partition().padded - e3.partition().numel) * 4;
  EXPECT_NEAR(held.params, f.params, pad / W + 64);
  EXPECT_NEAR(held.grads, f.grads, pad / W + 64);
  EXPECT_NEAR(held.optimizer, f.optimizer, 2 * pad / W + 128);
  const double ratio = static_cast<double>(e0.model_state_bytes().total()) / held.total();
  EXPECT_GT(ratio, 0.97 * W) << "stage 0 / stage 3 model-state bytes at " << W << " ranks";
  if (W == 4) {
    EXPECT_GE(ratio, 3.5);
  }
  ::testing::Test::RecordProperty("stage0_over_stage3", std::to_string(ratio));
}

// data_types.grad_accum_dtype bf16: the gradient partition in bf16 (2 psi / N, the paper's count),
// rounded once per unit reduction and once per accumulation; losses to bf16 precision.
TEST(Stage3Mpi, Bf16GradientsMatchOneProcess) {
  auto s = base(3, 1, 2);
  s.model_dtype = DType::bf16;
  s.grad_dtype = DType::bf16;
  s.overlap_comm = true;
  compare(s, 12, 3e-3, 1e-2);
  nn::GPT m(test::small_gpt());
  zero::Engine e(m, s, &world_comm());
  auto held = e.model_state_bytes(), f = e.model_state_formula();
  const int W = world_comm().world();
  const int64_t pad = (e.partition().padded - e.partition().numel) * 2;
  EXPECT_NEAR(held.grads, f.grads, pad / W + 32) << "2 bytes per gradient, divided by the ranks";
  EXPECT_NEAR(held.params, f.params, pad / W + 32);
}
