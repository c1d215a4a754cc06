// apps/bench_onebit.cpp: bytes on the wire and step time, AdamW vs OneBitAdam after freeze_step,
// in one run on the same ranks and the same flat fp32 buffer (the ZeRO stage 0 step without the
// model: gradient communication + optimizer update).
//   AdamW       all_reduce(avg) of the n-element gradient, then the AdamW update;
//   OneBitAdam  (compression stage) the update with the local gradient: momentum, then the 1-bit
//               compressed all-reduce of the momentum (comm/compressed.h), then the step.
// Bytes sent per rank per step are counted from every collective the communicator runs (its
// observer), with nccl-tests' bus factors: all_reduce 2(w-1)/w x size, all_gather and all_to_all
// (w-1)/w x size (gathered / total size): what a ring or pairwise algorithm puts on each rank's
// link. Step time: the slowest rank's time of each step, median over --iters steps.
// The buffer is cut into the tensors of GPT blocks at --width D (per block: norm D + D, qkv
// 3D^2 + 3D, proj D^2 + D, norm D + D, mlp 4D^2 + 4D and 4D^2 + D), repeated until n is filled:
// OneBitAdam compresses each tensor with its own scales (comm/compressed.h), so the messages
// carry one scale per tensor and each tensor's padding. --width 0: one tensor (the whole buffer).
// Output: one JSON line per optimizer and one with the ratios, then a short table (rank 0).
//
// Usage: mpirun -np 4 --oversubscribe bench_onebit [--n 16777216] [--width 256] [--iters 10]
//        [--warmup 2]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "core/tensor.h"
#include "optim/optimizer.h"

using namespace zt;

namespace {

struct Result {
  double median_ms = 0, bytes_per_step = 0;
};

double bus_factor(const std::string& op, int w) {
  if (w <= 1) return 0.0;
  if (op == "all_reduce") return 2.0 * (w - 1) / w;
  if (op == "all_gather" || op == "all_to_all" || op == "reduce_scatter") return (w - 1.0) / w;
  if (op == "broadcast") return 1.0;
  return 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    comm::Bootstrap& boot = comm::Bootstrap::init(&argc, &argv);
    int64_t n = int64_t{1} << 24;
    int64_t width = 256;
    int iters = 10, warmup = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string a = argv[i];
      if (a == "--n") n = std::atoll(argv[i + 1]);
      else if (a == "--iters") iters = std::atoi(argv[i + 1]);
      else if (a == "--warmup") warmup = std::atoi(argv[i + 1]);
      else if (a == "--width") width = std::atoll(argv[i + 1]);
      else throw ConfigError("bench_onebit: unknown option " + a +
                             " (--n, --width, --iters, --warmup)");
    }
    auto c = comm::make_mpi_communicator();
    const int w = c->world(), r = c->rank();
    std::atomic<double> wire{0.0};
    c->set_observer([&](const char* op, int64_t bytes, auto, auto) {
      double cur = wire.load();
      while (!wire.compare_exchange_weak(cur, cur + bus_factor(op, w) * static_cast<double>(bytes))) {
      }
    });

    std::vector<float> params(static_cast<size_t>(n)), grads(params.size());
    std::mt19937 gen(7 + r);
    std::normal_distribution<float> d(0.f, 1.f);
    for (float& x : grads) x = d(gen);
    for (float& x : params) x = 0.01f * d(gen);
    // One segment per tensor (as the engine cuts them for OneBitAdam), norms and biases undecayed.
    std::vector<optim::Segment> segs;
    if (width <= 0) {
      segs.push_back({0, n, true, 0});
    } else {
      const int64_t d = width;
      const std::vector<std::pair<int64_t, bool>> block = {
          {d, false},         {d, false},     {3 * d * d, true}, {3 * d, false},
          {d * d, true},      {d, false},     {d, false},        {d, false},
          {4 * d * d, true},  {4 * d, false}, {4 * d * d, true}, {d, false}};
      for (int64_t off = 0; off < n;)
        for (const auto& [k, decay] : block) {
          if (off == n) break;
          const int64_t size = std::min(k, n - off);
          segs.push_back({off, size, decay, static_cast<int64_t>(segs.size())});
          off += size;
        }
    }
    Tensor sync = Tensor::zeros({1});  // times reduced with max: the slowest rank's step

    auto measure = [&](const char* name) {
      optim::OneBitParams ob;
      ob.freeze_step = 1;  // one uncompressed step fills v, then compression
      ob.weight_decay = 0.01f;
      optim::AdamParams ap;
      ap.weight_decay = 0.01f;
      const bool onebit = std::strcmp(name, "OneBitAdam") == 0;
      std::unique_ptr<optim::Optimizer> opt = onebit ? optim::make_onebit_adam(ob) : optim::make_adam(ap);
      opt->init(n);
      opt->set_communicator(c.get());
      Tensor g = Tensor::from_vector(grads, {n});
      std::vector<double> times;
      double bytes = 0;
      for (int it = 0; it < warmup + iters + (onebit ? 1 : 0); ++it) {
        const bool reduce = !opt->reduces_own_gradients();  // the engine's decision
        c->barrier();
        wire = 0.0;
        const auto t0 = std::chrono::steady_clock::now();
        if (reduce) c->all_reduce(g, comm::ReduceOp::avg)->wait();
        opt->step(params.data(), g.data<float>(), n, segs, 1e-4f);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        const double sent = wire.load();
        sync.data<float>()[0] = static_cast<float>(ms);
        c->all_reduce(sync, comm::ReduceOp::max)->wait();
        std::memcpy(g.data<float>(), grads.data(), sizeof(float) * static_cast<size_t>(n));
        if (it >= warmup + (onebit ? 1 : 0)) {  // OneBitAdam: its first step is uncompressed
          times.push_back(sync.data<float>()[0]);
          bytes = sent;
        }
      }
      std::sort(times.begin(), times.end());
      Result res{times[times.size() / 2], bytes};
      if (r == 0)
        std::printf("{\"bench\": \"onebit\", \"optimizer\": \"%s\", \"ranks\": %d, \"params\": %lld, "
                    "\"tensors\": %zu, \"bytes_sent_per_rank_per_step\": %.0f, \"step_ms_median\": %.3f, "
                    "\"iters\": %d}\n",
                    name, w, static_cast<long long>(n), segs.size(), res.bytes_per_step, res.median_ms,
                    iters);
      return res;
    };
    const Result a = measure("AdamW");
    const Result b = measure("OneBitAdam");
    if (r == 0) {
      const double bytes_ratio = a.bytes_per_step > 0 ? b.bytes_per_step / a.bytes_per_step : 0.0;
      std::printf("{\"bench\": \"onebit\", \"ratio\": \"OneBitAdam/AdamW\", \"ranks\": %d, "
                  "\"bytes_ratio\": %.5f, \"step_time_ratio\": %.3f}\n",
                  w, bytes_ratio, b.median_ms / a.median_ms);
      std::printf("\n%-12s %14s %12s   (%d ranks, %lld f32 parameters in %zu tensors, median of %d "
                  "steps)\n",
                  "optimizer", "bytes/rank", "step ms", w, static_cast<long long>(n), segs.size(),
                  iters);
      std::printf("%-12s %14.0f %12.2f\n", "AdamW", a.bytes_per_step, a.median_ms);
      std::printf("%-12s %14.0f %12.2f\n", "OneBitAdam", b.bytes_per_step, b.median_ms);
      std::printf("%-12s %14.5f %12.3f   (1/%.1f of the bytes)\n", "ratio", bytes_ratio,
                  b.median_ms / a.median_ms, bytes_ratio > 0 ? 1.0 / bytes_ratio : 0.0);
    }
    c->set_observer(nullptr);
    c.reset();
    (void)boot;
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_onebit: %s\n", e.what());
    comm::Bootstrap::abort(1);
  }
}
