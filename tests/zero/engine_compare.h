// tests/zero/engine_compare.h: the MPI engine suites' yardstick: train the same model with an
// engine under test on all ranks and with stage 0 on one process with the global batch, and compare
// losses step by step and the weights at the end.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "core/ops.h"
#include "io/data.h"
#include "tests/zero/engine_test_util.h"
#include "zero/engine.h"

namespace zt::test {

inline zero::EngineSettings base(int stage, int64_t micro, int64_t gas) {
  zero::EngineSettings s;
  s.zero_stage = stage;
  s.micro_batch = micro;
  s.gradient_accumulation_steps = gas;
  s.gradient_clipping = 0.5;  // exercised: the norm from partitions must equal the full norm
  s.adam.weight_decay = 0.1f;
  s.scheduler = optim::make_warmup_lr({0.0, 1e-2, 5, optim::WarmupType::linear});
  return s;
}

inline comm::Communicator& world_comm() {
  static std::unique_ptr<comm::Communicator> c = comm::make_mpi_communicator();
  return *c;
}

// A tensor's values on the host (copied down from a GPU engine's buffers).
inline std::vector<float> host_values(const Tensor& t) {
  if (t.device().is_cpu()) return t.to_vector();
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  ops::copy(t, h);
  return h.to_vector();
}

// Mean of a value over ranks.
inline double mean_over_ranks(double v) {
  Tensor t = Tensor::from_vector({static_cast<float>(v)}, {1});
  world_comm().all_reduce(t, comm::ReduceOp::avg)->wait();
  return t.data<float>()[0];
}

// Losses of `steps` optimizer steps: the reference on one process with the global batch, and the
// engine under test on all ranks with its share of it.
inline size_t compare(zero::EngineSettings dist, int steps = 20, double loss_tol = 1e-5,
                      double param_tol = 1e-4, const nn::GPTConfig& cfg = small_gpt()) {
  comm::Communicator& c = world_comm();
  const int W = c.world(), R = c.rank();
  const int64_t micro = dist.micro_batch, gas = dist.gradient_accumulation_steps;
  io::TokenStream data = test::pattern_data();

  nn::GPT ref_model(cfg), model(cfg);
  ref_model.init_weights(42);
  model.init_weights(R == 0 ? 42 : 1000 + R);  // other ranks start elsewhere: the engine broadcasts
  zero::EngineSettings ref_s = dist;  // same precision, optimizer, schedule; stage 0, one process
  ref_s.zero_stage = 0;
  ref_s.device = Device::cpu();     // the CPU is the oracle of a GPU engine too
  ref_s.offload_optimizer.reset();  // the reference keeps its optimizer in memory
  ref_s.micro_batch = micro * W;
  zero::Engine ref(ref_model, ref_s);
  zero::Engine eng(model, dist, &c);
  io::WindowSampler ref_data(data, micro * W, 16, 7), my_data(data, micro, 16, 7, R, W);

  Tensor ids, tgt;
  double worst = 0;
  for (int step = 0; step < steps; ++step) {
    double ref_loss = 0, my_loss = 0;
    for (int m = 0; m < gas; ++m) {
      ref_data.next(ids, tgt);
      ref_loss += ref.forward(ids, tgt);
      ref.backward();
      ref.step();
      my_data.next(ids, tgt);
      my_loss += eng.forward(ids, tgt);
      eng.backward();
      EXPECT_EQ(eng.step(), m == gas - 1);
    }
    double global = mean_over_ranks(my_loss / gas);
    double rel = std::abs(global - ref_loss / gas) / std::abs(ref_loss / gas);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, loss_tol) << "step " << step << ": loss " << global << " vs " << ref_loss / gas;
    EXPECT_NEAR(eng.grad_norm(), ref.grad_norm(), 10 * loss_tol * ref.grad_norm()) << "step " << step;
  }
  // Every rank holds the same parameters as the reference at the end (stage 3: its partition of
  // them, element i being flat element partition().begin() + i).
  auto a = host_values(eng.model_params()), b = host_values(ref.model_params());
  const int64_t off = eng.partitioned_params() ? eng.partition().begin() : 0;
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size() && off + static_cast<int64_t>(i) < eng.num_parameters(); ++i) {
    const double x = a[i], y = b[off + i];
    d += (x - y) * (x - y);
    n += y * y;
  }
  if (n == 0) n = 1;  // a rank whose partition is all padding
  // Adam divides by sqrt(v): float rounding differences of the summation order grow a little in
  // the weights over 20 steps; the losses above are the criterion, this guards against drift.
  EXPECT_LT(std::sqrt(d / n), param_tol) << "parameters diverged from the single-process run";
  ::testing::Test::RecordProperty("worst_relative_loss_difference", std::to_string(worst));
  return eng.buckets().buckets.size();
}


}  // namespace zt::test
