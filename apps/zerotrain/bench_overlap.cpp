// apps/zerotrain/bench_overlap.cpp: `zerotrain bench overlap`: communication/computation overlap
// of the ZeRO engine, measured the way training runs it.
//
// For each ZeRO stage it builds two zero::Engine objects over the same GPT (the same weights, the
// same micro-batches), each on a communicator of its own, exactly as `zerotrain train` does:
//   off  overlap_comm false: gradient buckets are reduced after the whole backward (stages 1, 2);
//        at stage 3 each unit's reduce-scatter is waited for at once and nothing is prefetched
//        (stage3_prefetch_bucket_size 0), so every collective runs while the main thread waits;
//   on   overlap_comm true: a bucket is reduced as soon as its last unit's backward is done, on
//        the comm thread, while backward goes on (stage 3: each unit's gradient, and the
//        parameter gathers are prefetched ahead of use).
// Their steps are interleaved (off, on, on, off, ...) after a barrier each, so a change of
// machine load hits both alike. Per step: the slowest rank's wall time (forward + backward +
// optimizer step), and from the engine's Timings (wall_clock_breakdown) the comm thread's busy
// time. The figures, medians over the timed steps:
//   t_off, t_on   step time without and with overlap;
//   t_comm        communication alone: the comm thread's busy time in the off run, where every
//                 collective runs while the main thread sleeps in a wait (the same collectives,
//                 sizes and order as the on run, without compute competing); the smallest over
//                 ranks (a rank that reaches a collective first also counts its wait for the
//                 others);
//   hidden        (t_off - t_on) / t_comm: the fraction of the communication the overlap hid
//                 (1: all of it; 0: none; below 0: overlapping made the step slower);
//   comm/compute  t_comm / (t_off - t_comm), the ratio that bounds what overlap can gain;
//   t_comm_on     the comm thread's busy time in the on run: the same collectives, slower when
//                 they compete with compute for cores and memory bandwidth;
//   concurrent    from the engine's trace (io/trace.h): the comm time of the on run that ran
//                 at the same time as a backward unit's compute on the same rank.
// --trace PREFIX writes both runs' Chrome traces per stage (PREFIX.stageS.off.json, ...on.json)
// for Perfetto or scripts/plot_trace.py.
// Not every collective can hide: the parameter all-gather after the optimizer step (stages 1, 2)
// and the small all-reduces of the step (overflow flag, gradient norm) have nothing to overlap
// with in this engine; comm_ms_by_op in the JSON splits t_comm by collective.
//
// On a CPU node the "communication" is shared-memory copying by the comm thread (OpenMPI's sm
// transport): it needs a core of its own, like the compute threads. With 2 ranks on 2 cores each
// rank runs 1 OpenMP thread, and its comm thread runs on the same 2 cores: overlapped time is
// time-sliced, not parallel, so the traces show spans overlapping while little time is saved.
// Overlap pays where the transport works without the CPU (NCCL on GPUs, RDMA NICs) or where a
// core is left free for each rank's comm thread: e.g. on 16 cores, `mpirun -np 4` with --threads 3
// leaves 4 cores for the 4 comm threads. Knobs: ranks (mpirun -np), --layers and --width (the
// communicated bytes grow as layers x width^2), --seq and --micro-batch (compute grows with the
// tokens, communication does not), --bucket (reduce_bucket_size: smaller buckets start
// communicating earlier and overlap more, at a latency cost per bucket), --threads.
#include "apps/zerotrain/bench_overlap.h"

#include "apps/zerotrain/bench_common.h"
#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "core/nn/gpt.h"
#include "core/ops.h"
#include "io/trace.h"
#include "optim/lr_scheduler.h"
#include "zero/engine.h"

#include <mpi.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace zt::app {
namespace {

using Clock = std::chrono::steady_clock;

// One engine under test, with everything it needs alive.
struct Run {
  std::unique_ptr<nn::GPT> model;
  std::unique_ptr<comm::Communicator> comm;
  std::unique_ptr<zero::Engine> engine;
  io::TraceRecorder trace;
  explicit Run(int rank) : trace(rank) {}
};

// What one step of one engine measured on this rank.
struct StepSample {
  double step_ms = 0;        // this rank's wall time
  double comm_busy_ms = 0;   // the comm thread's busy time
  double concurrent_ms = 0;  // comm time during backward-unit compute spans
  std::map<std::string, double> comm_by_op;
};

zero::EngineSettings settings(int stage, bool overlap, const OverlapBenchOptions& o) {
  zero::EngineSettings s;
  s.zero_stage = stage;
  s.micro_batch = o.micro_batch;
  s.overlap_comm = overlap;
  s.reduce_bucket_size = o.bucket;
  s.gradient_clipping = 1.0;  // the norm's all-reduce, as a typical config has it
  s.adam.weight_decay = 0.1f;
  s.scheduler = optim::make_constant_lr(1e-3);
  // Stage 3 without overlap: nothing runs ahead either (see the top of the file).
  if (stage == 3 && !overlap) s.stage3_prefetch_bucket_size = 0;
  return s;
}

// Deterministic token ids of micro-batch `k` of this rank (the same for both engines).
void make_batch(int64_t k, int rank, const OverlapBenchOptions& o, Tensor& ids, Tensor& tgt) {
  ids = Tensor::empty({o.micro_batch, o.seq}, DType::i32);
  tgt = Tensor::empty({o.micro_batch, o.seq}, DType::i32);
  uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(k * 131 + rank + 1);
  int32_t* a = ids.data<int32_t>();
  int32_t* b = tgt.data<int32_t>();
  const int64_t n = o.micro_batch * o.seq;
  for (int64_t i = 0; i <= n; ++i) {
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    const int32_t t = static_cast<int32_t>((x * 0x2545F4914F6CDD1Dull) >> 40) % o.vocab;
    if (i < n) a[i] = t;
    if (i > 0) b[i - 1] = t;
  }
}

// Total length of the parts of `comm` spans that lie inside `compute` spans (these are disjoint:
// the main thread runs one at a time).
double concurrent_us(const std::vector<io::TraceSpan>& comm,
                     const std::vector<io::TraceSpan>& compute) {
  double sum = 0;
  for (const io::TraceSpan& c : comm)
    for (const io::TraceSpan& b : compute) {
      const double lo = std::max(c.ts_us, b.ts_us);
      const double hi = std::min(c.ts_us + c.dur_us, b.ts_us + b.dur_us);
      if (hi > lo) sum += hi - lo;
    }
  return sum;
}

StepSample one_step(Run& r, int64_t k, int rank, const OverlapBenchOptions& o) {
  Tensor ids, tgt;
  make_batch(k, rank, o, ids, tgt);
  const size_t first = r.trace.spans().size();
  r.engine->take_timings();
  MPI_Barrier(MPI_COMM_WORLD);
  const auto t0 = Clock::now();
  r.engine->forward(ids, tgt);
  r.engine->backward();
  r.engine->step();
  StepSample s;
  s.step_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  s.comm_busy_ms = r.engine->take_timings().comm_busy;
  std::vector<io::TraceSpan> all = r.trace.spans(), comm, compute;
  for (size_t i = first; i < all.size(); ++i) {
    const io::TraceSpan& sp = all[i];
    if (sp.track == static_cast<int>(io::TraceTrack::kCommunication)) {
      comm.push_back(sp);
      s.comm_by_op[sp.name] += sp.dur_us / 1e3;
    } else if (sp.name.rfind("backward unit", 0) == 0) {
      compute.push_back(sp);
    }
  }
  s.concurrent_ms = concurrent_us(comm, compute) / 1e3;
  return s;
}

double reduce(double v, MPI_Op op) {
  double out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, op, MPI_COMM_WORLD);
  return out;
}

struct StageResult {
  int stage = 0;
  size_t buckets = 0;
  int64_t params = 0;
  double t_off = 0, t_on = 0, t_comm = 0, t_comm_on = 0, concurrent = 0;
  std::map<std::string, double> comm_by_op;  // rank 0, off run, median per step
  double compute() const { return t_off - t_comm; }
  double hidden() const { return t_comm > 0 ? (t_off - t_on) / t_comm : NAN; }
  double ratio() const { return compute() > 0 ? t_comm / compute() : NAN; }
};

StageResult bench_stage(int stage, const OverlapBenchOptions& o, int rank) {
  nn::GPTConfig cfg;
  cfg.n_layer = o.layers;
  cfg.n_embd = o.width;
  cfg.n_head = o.heads;
  cfg.seq_len = o.seq;
  cfg.vocab_size = o.vocab;
  Run off(rank), on(rank);
  for (Run* r : {&off, &on}) {
    r->model = std::make_unique<nn::GPT>(cfg);
    r->model->init_weights(1234);
    r->comm = comm::make_mpi_communicator();
    r->engine =
        std::make_unique<zero::Engine>(*r->model, settings(stage, r == &on, o), r->comm.get());
    r->engine->set_trace(&r->trace);
  }
  int64_t k = 0;
  for (int w = 0; w < o.warmup; ++w, ++k) {
    one_step(off, k, rank, o);
    one_step(on, k, rank, o);
  }
  std::vector<double> t_off, t_on, t_comm, t_comm_on, conc;
  std::map<std::string, std::vector<double>> by_op;
  for (int i = 0; i < o.steps; ++i, ++k) {
    StepSample a, b;
    if (i % 2 == 0) {
      a = one_step(off, k, rank, o);
      b = one_step(on, k, rank, o);
    } else {
      b = one_step(on, k, rank, o);
      a = one_step(off, k, rank, o);
    }
    t_off.push_back(reduce(a.step_ms, MPI_MAX));
    t_on.push_back(reduce(b.step_ms, MPI_MAX));
    t_comm.push_back(reduce(a.comm_busy_ms, MPI_MIN));
    t_comm_on.push_back(reduce(b.comm_busy_ms, MPI_MIN));
    conc.push_back(reduce(b.concurrent_ms, MPI_SUM) / off.engine->world());
    for (auto& [op, ms] : a.comm_by_op) by_op[op].push_back(ms);
  }
  StageResult res;
  res.stage = stage;
  // Reductions per backward: the buckets (stages 1, 2), one per unit at stage 3.
  res.buckets =
      stage == 3 ? static_cast<size_t>(on.model->num_units()) : on.engine->buckets().buckets.size();
  res.params = on.engine->num_parameters();
  res.t_off = bench::median(t_off);
  res.t_on = bench::median(t_on);
  res.t_comm = bench::median(t_comm);
  res.t_comm_on = bench::median(t_comm_on);
  res.concurrent = bench::median(conc);
  for (auto& [op, v] : by_op) {
    while (v.size() < t_off.size()) v.push_back(0);  // steps without this op
    res.comm_by_op[op] = bench::median(v);
  }
  for (Run* r : {&off, &on}) r->engine->set_trace(nullptr);
  if (!o.trace.empty()) {  // every step of both runs, warm-up included, one file per run
    for (Run* r : {&off, &on}) {
      const std::string path =
          o.trace + ".stage" + std::to_string(stage) + (r == &on ? ".on.json" : ".off.json");
      r->trace.write_rank_file(path);
      MPI_Barrier(MPI_COMM_WORLD);
      if (rank == 0) io::merge_traces(path, r->engine->world());
    }
  }
  return res;
}

}  // namespace

int run_bench_overlap(const OverlapBenchOptions& o) {
  const comm::Topology& topo = comm::Bootstrap::instance().topology();
  bench::check_arg(topo.world >= 2, "bench overlap",
                   "needs at least 2 ranks: run it under mpirun -np 2 (or more)");
  bench::check_arg(o.layers > 0 && o.width > 0 && o.heads > 0 && o.width % o.heads == 0, "--width",
                   "must be a positive multiple of --heads (and --layers positive)");
  bench::check_arg(o.seq > 0 && o.vocab > 0 && o.micro_batch > 0, "--seq",
                   "--seq, --vocab and --micro-batch must be positive");
  bench::check_arg(o.bucket > 0, "--bucket", "must be a positive number of elements");
  bench::check_arg(o.steps > 0 && o.warmup >= 0, "--steps", "must be positive (--warmup >= 0)");
  bench::check_arg(!o.stages.empty(), "--stages", "needs at least one stage");
  for (int s : o.stages) bench::check_arg(s >= 1 && s <= 3, "--stages", "takes stages 1, 2 and 3");
  const bool root = topo.rank == 0;
  const int threads =
      o.threads > 0
          ? o.threads
          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / topo.local_size);
  ops::set_num_threads(threads);
  bench::JsonLines json(o.json, root);

  std::vector<StageResult> results;
  int64_t params = 0;
  for (int stage : o.stages) {
    results.push_back(bench_stage(stage, o, topo.rank));
    const StageResult& r = results.back();
    params = r.params;
    nlohmann::json j = {{"bench", "overlap"},
                        {"stage", stage},
                        {"ranks", topo.world},
                        {"threads", threads},
                        {"cores", std::thread::hardware_concurrency()},
                        {"layers", o.layers},
                        {"width", o.width},
                        {"seq", o.seq},
                        {"micro_batch", o.micro_batch},
                        {"params", params},
                        {"bucket", o.bucket},
                        {"buckets", r.buckets},
                        {"steps", o.steps},
                        {"t_off_ms", r.t_off},
                        {"t_on_ms", r.t_on},
                        {"t_comm_ms", r.t_comm},
                        {"t_comm_on_ms", r.t_comm_on},
                        {"t_compute_ms", r.compute()},
                        {"comm_compute_ratio", r.ratio()},
                        {"hidden_fraction", r.hidden()},
                        {"speedup", r.t_on > 0 ? r.t_off / r.t_on : NAN},
                        {"concurrent_ms", r.concurrent},
                        {"comm_ms_by_op", r.comm_by_op}};
    json.write(j.dump());
  }

  if (root && o.table) {
    std::printf(
        "# zerotrain bench overlap: %d ranks x %d OpenMP thread(s) on %u cores; GPT %d x %d, "
        "seq %d, micro-batch %lld (%lld params, f32); reduce_bucket_size %lld; medians of "
        "%d interleaved steps, ms\n",
        topo.world, threads, std::thread::hardware_concurrency(), o.layers, o.width, o.seq,
        static_cast<long long>(o.micro_batch), static_cast<long long>(params),
        static_cast<long long>(o.bucket), o.steps);
    std::printf("%5s %7s %9s %9s %9s %9s %7s %12s %9s %11s\n", "stage", "buckets", "t_off", "t_on",
                "t_comm", "t_compute", "hidden", "comm/compute", "t_comm_on", "concurrent");
    for (const StageResult& r : results)
      std::printf("%5d %7zu %9.2f %9.2f %9.2f %9.2f %7.2f %12.2f %9.2f %11.2f\n", r.stage,
                  r.buckets, r.t_off, r.t_on, r.t_comm, r.compute(), r.hidden(), r.ratio(),
                  r.t_comm_on, r.concurrent);
    std::printf(
        "# t_off/t_on: step time with overlap_comm false/true (stage 3 off: no prefetch either);\n"
        "# t_comm: the off run's collectives alone (comm thread busy while compute waits);\n"
        "# hidden = (t_off - t_on) / t_comm; t_comm_on: the same collectives during compute;\n"
        "# concurrent: comm time of the on run inside backward compute spans (trace).\n"
        "# The parameter all-gather after the step (stages 1, 2) cannot overlap in this engine.\n");
    if (static_cast<int>(std::thread::hardware_concurrency()) <= topo.local_size * threads)
      std::printf(
          "# Every core runs a compute thread, so each rank's comm thread (which does the\n"
          "# shared-memory copies of MPI) takes its CPU time from compute: overlapped spans are\n"
          "# time-sliced, and little can be hidden (a comm thread waiting for its peer inside a\n"
          "# collective busy-polls: OMPI_MCA_mpi_yield_when_idle=1 softens that). Leave a core\n"
          "# per rank free (--threads) or use a transport that needs no CPU (NCCL, RDMA).\n");
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace zt::app
