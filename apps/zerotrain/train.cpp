// apps/zerotrain/train.cpp: one training job: config -> data -> model -> Engine -> logs -> sample.
#include "apps/zerotrain/train.h"
#include "apps/zerotrain/faults.h"  // [faults]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <optional>
#include <random>
#include <thread>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/watchdog.h"  // [faults]
#include "core/cuda/allocator.h"
#include "core/cuda/device.h"
#include "core/cuda/stream.h"
#include "core/ops.h"
#include "io/config.h"
#include "io/data.h"
#include "io/checkpoint_checksum.h"
#include "io/checkpoint_store.h"
#include "io/monitor.h"
#include "io/trace.h"
#include "zero/diagnose.h"  // [faults]
#include "zero/settings.h"

#ifndef ZT_SOURCE_DIR
#define ZT_SOURCE_DIR "."
#endif

namespace zt::app {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Signals only set a flag (DESIGN.md): SIGTERM, SIGUSR1 and a first SIGINT ask for a checkpoint at
// the next step boundary, which all ranks agree on; a second SIGINT aborts at once (exit 130,
// the shell's code for SIGINT; mpirun then ends the other ranks).
volatile std::sig_atomic_t g_stop_signal = 0;
volatile std::sig_atomic_t g_sigints = 0;
extern "C" void on_stop_signal(int sig) {
  if (sig == SIGINT) {
    g_sigints = g_sigints + 1;
    if (g_sigints >= 2) {
      // [faults] async-signal-safe: write(2), then _Exit.
      static const char msg[] = "zerotrain: second SIGINT: exiting now without saving (code 130)\n";
      ssize_t ignored = ::write(STDERR_FILENO, msg, sizeof msg - 1);
      (void)ignored;
      std::_Exit(130);
    }
  }
  g_stop_signal = sig;
}

// Relative data paths are relative to the config file's folder, so a config works from any cwd.
std::string resolve_path(const std::string& p, const std::string& config_path) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return (fs::path(config_path).parent_path() / p).lexically_normal().string();
}

io::Split load_data(const io::Config& cfg) {
  const char* fmt = io::to_string(cfg.data.format);
  io::TokenStream all;
  if (cfg.data.path.empty()) {
    // Default corpus: this repository's own documentation and sources (no download needed).
    ZT_CHECK_DATA(fs::is_directory(ZT_SOURCE_DIR), "data.path",
                  "is empty and the default corpus (the zerotrain sources at " ZT_SOURCE_DIR
                  ") is not there: set data.path to a text or token file");
    all = io::load_text_tree(ZT_SOURCE_DIR);
  } else {
    all = io::load_tokens(resolve_path(cfg.data.path, cfg.source_path), fmt);
  }
  io::Split s;
  if (!cfg.data.val_path.empty()) {
    s.train = std::move(all);
    s.val = io::load_tokens(resolve_path(cfg.data.val_path, cfg.source_path), fmt);
  } else {
    s = io::split_tokens(std::move(all), cfg.data.val_fraction);
  }
  for (const io::TokenStream* t : {&s.train, &s.val})
    ZT_CHECK_DATA(t->max_token < cfg.model.vocab_size, t->source, "holds token id ", t->max_token,
                  " but model.vocab_size is ", cfg.model.vocab_size);
  return s;
}

// Whether mpirun/srun started this process: its environment *at exec* (/proc/self/environ; MPI's
// singleton start adds OMPI_* variables later, with putenv) names a launcher.
bool started_by_launcher() {
  std::ifstream env("/proc/self/environ", std::ios::binary);
  std::string var;
  while (std::getline(env, var, '\0'))
    for (const char* key : {"OMPI_COMM_WORLD_SIZE=", "PMIX_RANK=", "PMI_RANK=", "SLURM_JOB_ID="})
      if (var.rfind(key, 0) == 0) return true;
  return false;
}

double eval_loss(zero::Engine& engine, const io::TokenStream& val, const io::Config& cfg) {
  if (val.tokens.size() <= static_cast<size_t>(cfg.model.seq_len) + 1 || cfg.training.eval_batches <= 0)
    return NAN;
  // Same windows at every evaluation (a fixed seed), so the curve compares like with like.
  io::WindowSampler s(val, engine.settings().micro_batch, cfg.model.seq_len,
                      static_cast<uint64_t>(cfg.training.seed) ^ 0xe7a1u);
  Tensor ids, tgt;
  double sum = 0.0;
  for (int64_t i = 0; i < cfg.training.eval_batches; ++i) {
    s.next(ids, tgt);
    sum += engine.evaluate(ids, tgt);
  }
  return sum / static_cast<double>(cfg.training.eval_batches);
}

// Sample `n` bytes from the model after a prompt (temperature 0.8, seeded: reproducible).
// At ZeRO stage 3 every rank must run it (each forward gathers the units collectively).
std::string sample_text(zero::Engine& engine, const std::string& prompt, int n, uint64_t seed) {
  nn::GPT& model = engine.model();
  const int T = model.config().seq_len, V = model.config().vocab_size;
  std::vector<int32_t> ctx(prompt.begin(), prompt.end());
  std::mt19937_64 rng(seed);
  std::string out;
  for (int i = 0; i < n; ++i) {
    int64_t t = std::min<int64_t>(static_cast<int64_t>(ctx.size()), T);
    Tensor ids = Tensor::empty({1, t}, DType::i32), tgt = Tensor::empty({1, t}, DType::i32);
    std::copy(ctx.end() - t, ctx.end(), ids.data<int32_t>());
    std::fill_n(tgt.data<int32_t>(), t, -1);
    engine.evaluate(ids, tgt);
    // The last position's logits (copied down from a GPU).
    Tensor row = Tensor::empty({V});
    ops::copy(model.logits().flat_view((t - 1) * V, {V}), row);
    const float* logits = row.data<float>();
    std::vector<double> p(V);
    double mx = *std::max_element(logits, logits + V), sum = 0.0;
    for (int v = 0; v < V; ++v) sum += p[v] = std::exp((logits[v] - mx) / 0.8);
    double r = std::uniform_real_distribution<double>(0.0, sum)(rng);
    int next = 0;
    while (next < V - 1 && (r -= p[next]) > 0) ++next;
    ctx.push_back(next);
    out.push_back(static_cast<char>(next));
  }
  return out;
}

std::string human_bytes(int64_t b) {
  char buf[32];
  if (b >= (1 << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  return buf;
}

}  // namespace

int run_train(const TrainOptions& opt) {
  const comm::Topology& topo = comm::Bootstrap::instance().topology();
  const int world = topo.world, rank = topo.rank;
  const bool lead = rank == 0;  // rank 0 prints, logs and samples
  // First thing: a signal while the config and data load (a Slurm --signal arriving early) must
  // also end in a save at the first step boundary, not kill the rank.
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  const FaultHook fault = fault_from_env();  // [faults] ZT_FAULT test hook (faults.h)
  io::Config cfg = io::load_config(opt.config_path, opt.overrides);
  if (opt.steps >= 0) cfg.training.steps = opt.steps;
  io::resolve_batch_sizes(cfg, world);
  zero::check_supported(cfg);
  for (std::string& n : zero::config_notices(cfg)) cfg.notices.push_back(std::move(n));
  if (!cfg.zero.contiguous_gradients)
    cfg.notices.push_back("zero_optimization.contiguous_gradients: false has no effect: zerotrain's "
                          "gradients are always views into one flat buffer");
  if (lead)
    for (const std::string& n : cfg.notices) std::printf("note: %s\n", n.c_str());
  // The device (`device: auto|cpu|cuda`): this rank's GPU is its local rank modulo the visible
  // GPUs. It is made current once, here, for the whole run (every kernel launches on the calling
  // thread's current device); the engine binds it again for itself.
  const Device device = zero::resolve_device(cfg, topo.local_rank);
  std::optional<cuda::StreamGuard> device_scope;
  if (device.is_cuda()) device_scope.emplace(cuda::Stream::wrap(nullptr, device.index));
  // Ranks on one node share its cores: by default each gets cores / local ranks OpenMP threads.
  int threads = opt.threads > 0 ? opt.threads
                                : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                                                  topo.local_size);
  if (opt.threads > 0 || topo.local_size > 1) ops::set_num_threads(threads);

  io::Split data = load_data(cfg);
  // [faults] The watchdog (comm/watchdog.h) outlives the communicators and the engine: a stuck
  // collective anywhere in the job is reported (op, step, missing ranks) and ends it.
  const comm::WatchdogOptions wdo = comm::options_from_env(cfg.comm.timeout_s);
  std::unique_ptr<comm::Watchdog> watchdog;
  // The training communicator (the engine's collectives) is the backend `comm.backend` asks for
  // (auto: nccl when the tensors are on GPUs, one per rank; mpi otherwise, device buffers staged).
  // The trainer's own small host-side collectives (config agreement, the loss and stop flag) run
  // on an mpi communicator: the same one when the backend is mpi, a second one beside nccl (which
  // reduces device memory only).
  std::unique_ptr<comm::Communicator> comm, host_comm_owned;
  comm::Communicator* host_comm = nullptr;
  std::string comm_reason;
  if (world > 1) {
    watchdog = std::make_unique<comm::Watchdog>(wdo);
    comm::CommOptions co;
    if (wdo.blocking_wait) co.timeout_s = wdo.timeout_s;  // NCCL_BLOCKING_WAIT semantics
    if (device.is_cuda()) co.device = device.index;
    comm = comm::make_communicator(comm::parse_backend(io::to_string(cfg.comm.backend)),
                                   device.is_cuda(), co, &comm_reason);
    host_comm = comm.get();
    if (comm->backend() != "mpi") {
      host_comm_owned = comm::make_mpi_communicator(co);
      host_comm = host_comm_owned.get();
    }
    check_config_agreement(*host_comm, io::dump_config(cfg));  // [faults] every rank, same config
    // comms_logger: per-op counts, bytes, latency, algbw/busbw, printed as a table at the end.
    comm::CommLogOptions lo;
    lo.enabled = cfg.comms_logger.enabled;
    lo.verbose = cfg.comms_logger.verbose && lead;
    lo.prof_all = cfg.comms_logger.prof_all;
    lo.prof_ops = cfg.comms_logger.prof_ops;
    comm->log().configure(lo);
  }
  nn::GPT model(zero::gpt_config(cfg));
  model.init_weights(static_cast<uint64_t>(cfg.training.seed));
  zero::EngineSettings settings = zero::engine_settings(cfg);
  settings.device = device;
  zero::Engine engine(model, std::move(settings), comm.get());
  const int64_t B = engine.settings().micro_batch, T = cfg.model.seq_len;
  const int64_t gas = engine.settings().gradient_accumulation_steps;
  const int64_t tokens_per_step = B * gas * T * world;
  io::WindowSampler sampler(data.train, B, T, static_cast<uint64_t>(cfg.training.seed), rank, world);

  auto ms = engine.model_state_bytes();
  auto mf = engine.model_state_formula();
  if (lead) {
    std::printf("zerotrain: %s\n", cfg.source_path.c_str());
    std::printf("  model     GPT %d layers, %d wide, %d heads, seq %d, vocab %d: %lld parameters\n",
                cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head, cfg.model.seq_len,
                cfg.model.vocab_size, static_cast<long long>(engine.num_parameters()));
    std::printf("  batch     train_batch_size %lld = micro %lld x accumulation %lld x ranks %d\n",
                static_cast<long long>(*cfg.train_batch_size), static_cast<long long>(B),
                static_cast<long long>(gas), world);
    std::printf("  data      %s: %zu train / %zu validation tokens\n", data.train.source.c_str(),
                data.train.tokens.size(), data.val.tokens.size());
    if (device.is_cuda()) {
      std::string gpu = cuda::device_summary();  // one line per visible GPU: ours
      for (int i = 0; i < device.index && gpu.find('\n') != std::string::npos; ++i)
        gpu = gpu.substr(gpu.find('\n') + 1);
      gpu = gpu.substr(0, gpu.find('\n'));
      std::printf("  run       device %s (device: %s; %s), ranks %d on %d node(s), ZeRO stage %d, "
                  "%s (%s), %lld steps\n",
                  device.str().c_str(), io::to_string(cfg.device), gpu.c_str(), world, topo.nodes,
                  cfg.zero.stage, engine.optimizer().name().c_str(),
                  engine.device_optimizer() ? "fused on the GPU" : "stepped on the host",
                  static_cast<long long>(cfg.training.steps));
    } else {
      std::printf("  run       device cpu (device: %s; %d threads/rank), ranks %d on %d node(s), "
                  "ZeRO stage %d, %s, %lld steps\n",
                  io::to_string(cfg.device), ops::num_threads(), world, topo.nodes, cfg.zero.stage,
                  engine.optimizer().name().c_str(), static_cast<long long>(cfg.training.steps));
    }
    if (world > 1)
      std::printf("  backend   %s: %s\n", comm->backend().c_str(), comm_reason.c_str());
    if (world > 1 && engine.partitioned_params())
      std::printf("  comm      mpi, stage 3: each unit gathered before use (prefetch %lld elements, "
                  "%d of %d units persistent), its gradient reduce-scattered after its backward, "
                  "overlap_comm %s\n",
                  static_cast<long long>(engine.settings().stage3_prefetch_bucket_size),
                  engine.coordinator()->persistent_units(), engine.model().num_units(),
                  cfg.zero.overlap_comm ? "on" : "off");
    else if (world > 1)
      std::printf("  comm      %s, buckets of %lld elements (%zu), overlap_comm %s, %s\n",
                  comm->backend().c_str(),
                  static_cast<long long>(engine.settings().reduce_bucket_size),
                  engine.buckets().buckets.size(), cfg.zero.overlap_comm ? "on" : "off",
                  cfg.zero.stage == 2 && cfg.zero.reduce_scatter ? "reduce-scatter"
                                                                  : "all-reduce");
    if (engine.offload())
      std::printf("  offload   optimizer: %s\n", engine.offload()->describe().c_str());
    if (world > 1)  // [faults]
      std::printf("  faults    a collective stuck for %g s (comm.timeout_s) ends the job (exit %d)"
                  "%s\n", wdo.timeout_s, comm::kExitCommTimeout,
                  wdo.abort_on_timeout ? "" : ": reported only (environment)");
    for (const std::string& n : wdo.notes) std::printf("note: %s\n", n.c_str());
    std::printf("  precision weights %s, master/optimizer fp32, gradients accumulate in fp32%s\n",
                dtype_name(engine.model_params().dtype()),
                engine.mixed() && cfg.fp16.enabled
                    ? (engine.loss_scaler().dynamic() ? ", dynamic loss scale" : ", static loss scale")
                    : "");
    std::printf("  memory    model states per rank: params %s, grads %s, optimizer %s "
                "(ZeRO formula: %s, %s, %s)%s%s\n",
                human_bytes(ms.params).c_str(), human_bytes(ms.grads).c_str(),
                human_bytes(ms.optimizer).c_str(), human_bytes(mf.params).c_str(),
                human_bytes(mf.grads).c_str(), human_bytes(mf.optimizer).c_str(),
                !ms.workspace ? "" : engine.partitioned_params() ? "; gathered-unit pool peak "
                                                                 : "; f32 compute copy ",
                ms.workspace ? human_bytes(ms.workspace).c_str() : "");
    if (ms.host_staging)  // a GPU engine's host-side copies for an optimizer stepped on the host
      std::printf("  host      %s per rank: fp32 master and gradient staging of the host step\n",
                  human_bytes(ms.host_staging).c_str());
    if (ms.nvme)  // offload to NVMe: what lives on the drive instead of in memory
      std::printf("  nvme      %s of swap files per rank (offload_param / offload_optimizer)\n",
                  human_bytes(ms.nvme).c_str());
    std::fflush(stdout);
  }

  std::ofstream jlog;
  if (lead && !opt.json_log.empty()) {
    jlog.open(opt.json_log);
    ZT_CHECK(jlog.good(), "--json-log: cannot write ", opt.json_log);
  }

  // Checkpoints: checkpoint.dir (or the --resume folder) holds the tags. Resume from its latest
  // intact tag with --resume, or when checkpoint.resume is set and the folder has one.
  // nebula_config (DeepSpeed's Nebula): saves persist in the background to persistent_storage_path,
  // at most one per persistent_time_interval seconds (final and signal saves always), keeping
  // num_of_version_in_retention versions; resume reads load_path (default the storage path) when
  // enable_nebula_load, else checkpoint.dir. checkpoint.async: background persists to checkpoint.dir.
  const io::NebulaConfig& neb = cfg.nebula;
  std::string ckpt_dir = neb.enabled ? neb.persistent_storage_path : cfg.checkpoint.dir;
  const std::string auto_dir = !neb.enabled            ? ckpt_dir
                               : !neb.enable_nebula_load ? cfg.checkpoint.dir
                               : neb.load_path.empty()   ? neb.persistent_storage_path
                                                         : neb.load_path;
  if (!opt.resume.empty() && opt.resume != "auto") {
    if (ckpt_dir.empty()) ckpt_dir = opt.resume;  // keep saving where we resumed from
  }
  ZT_CHECK_CONFIG(opt.resume != "auto" || !auto_dir.empty(), "checkpoint.dir",
                  "--resume auto needs checkpoint.dir (or give --resume a folder)");
  const std::string load_dir = (!opt.resume.empty() && opt.resume != "auto") ? opt.resume : auto_dir;
  bool want_resume = !opt.resume.empty() || (cfg.checkpoint.resume && !auto_dir.empty());
  int64_t start_step = 0;
  if (want_resume) {
    bool exists = !io::list_tags(load_dir).empty();
    ZT_CHECK_DATA(exists || opt.resume.empty() || opt.resume == "auto", load_dir,
                  "--resume: no checkpoint in this folder");
    if (exists) {
      zero::LoadResult r = engine.load_checkpoint(load_dir);
      nlohmann::json cs = nlohmann::json::parse(r.client_state);
      sampler.set_position(cs.value("sampler_position", int64_t{0}));
      start_step = cs.value("step", int64_t{0});
      if (lead) {
        if (!r.message.empty()) std::printf("note: %s\n", r.message.c_str());
        std::printf("  resume    %s/%s at step %lld (saved by %d ranks at stage %d)\n",
                    load_dir.c_str(), r.tag.c_str(), static_cast<long long>(start_step),
                    r.saved_world_size, r.saved_stage);
      }
    } else if (lead) {
      std::printf("  resume    no checkpoint in %s yet: starting fresh\n", load_dir.c_str());
    }
  }
  zero::SaveOptions save_opts;
  save_opts.keep = neb.enabled ? static_cast<int>(neb.num_of_version_in_retention) : cfg.checkpoint.keep;
  save_opts.config_hash = io::content_hash(io::dump_config(cfg));
  save_opts.async = neb.enabled || cfg.checkpoint.async;
  save_opts.min_interval_s = neb.enabled ? static_cast<double>(neb.persistent_time_interval) : 0.0;
  // final_save: the end of training or a signal: never skipped, and durable before we exit.
  auto save = [&](int64_t step, bool final_save) {
    if (ckpt_dir.empty()) return;
    nlohmann::json cs = {{"step", step}, {"sampler_position", sampler.position()}};
    zero::SaveOptions so = save_opts;
    so.force = final_save;
    zero::SaveResult r = engine.save_checkpoint(ckpt_dir, "", cs.dump(), so);
    zero::CheckpointWait done;
    if (final_save) done = engine.wait_checkpoint();
    if (!lead) return;
    const char* mode = r.mode == zero::SaveResult::Mode::sync    ? "sync"
                       : r.mode == zero::SaveResult::Mode::async ? "async"
                                                                 : "skipped";
    if (r.previous.wait_ms > 0)
      std::printf("  waited    %.0f ms for the previous checkpoint persist (%s) to finish\n",
                  r.previous.wait_ms, r.previous.tag.c_str());
    if (r.mode == zero::SaveResult::Mode::skipped)
      std::printf("  skipped   checkpoint at step %lld: %s\n", static_cast<long long>(step),
                  r.message.c_str());
    else if (r.mode == zero::SaveResult::Mode::sync)
      std::printf("  saved     %s/%s (%.0f ms)%s%s\n", ckpt_dir.c_str(), r.tag.c_str(), r.blocked_ms,
                  r.message.empty() ? "" : ": ", r.message.c_str());
    else
      std::printf("  saved     %s/%s in the background (training blocked %.0f ms, snapshot %.0f ms)\n",
                  ckpt_dir.c_str(), r.tag.c_str(), r.blocked_ms, r.snapshot_ms);
    if (!done.tag.empty())
      std::printf("  persisted %s/%s (%.0f ms; waited %.0f ms for it)\n", ckpt_dir.c_str(),
                  done.tag.c_str(), done.persist_ms, done.wait_ms);
    if (jlog.is_open())
      jlog << nlohmann::json({{"event", "checkpoint"}, {"step", step}, {"tag", r.tag},
                             {"mode", mode}, {"blocked_ms", r.blocked_ms},
                             {"snapshot_ms", r.snapshot_ms}, {"previous_wait_ms", r.previous.wait_ms},
                             {"final_wait_ms", done.wait_ms}})
                 .dump()
          << "\n";
    std::fflush(stdout);
  };

  // csv_monitor / tensorboard: DeepSpeed's tags, with the number of samples seen as the step.
  io::MonitorOptions mopt;
  mopt.rank = rank;
  std::unique_ptr<io::MonitorSet> monitors = io::make_monitors(cfg.monitors, mopt);
  const int64_t samples_per_step = B * gas * world;

  std::unique_ptr<io::TraceRecorder> trace;
  if (!opt.trace.empty()) {
    trace = std::make_unique<io::TraceRecorder>(rank);
    engine.set_trace(trace.get());
  }
  double data_ms = 0;
  zero::Timings acc;      // breakdown summed since the last print
  double acc_data_ms = 0;
  int64_t acc_steps = 0;
  engine.take_timings();  // start the breakdown from here

  // On a terminal rank 0 keeps a progress bar with an ETA on the last line; batch logs (stdout a
  // file or pipe) get only the plain lines.
  // The progress bar needs a terminal. Under a launcher (mpirun, srun) rank 0's stdout is a pty
  // that mpirun forwards whatever its own stdout is, batch logs included, so there plain lines are
  // the default; ZT_PROGRESS=1 forces the bar, ZT_PROGRESS=0 turns it off everywhere.
  const char* progress_env = std::getenv("ZT_PROGRESS");
  const std::string progress_mode = progress_env ? progress_env : "";
  const bool launched = started_by_launcher();
  const bool tty = lead && isatty(STDOUT_FILENO) && progress_mode != "0" &&
                   (progress_mode == "1" || !launched);
  auto t_start = Clock::now();
  auto progress = [&](int64_t step, double loss_now, double tok_s) {
    if (!tty) return;
    const int64_t total = cfg.training.steps, done = step - start_step, todo = total - start_step;
    double el = std::chrono::duration<double>(Clock::now() - t_start).count();
    double eta = done > 0 ? el / static_cast<double>(done) * static_cast<double>(total - step) : 0;
    const int width = 30;
    int fill = todo > 0 ? static_cast<int>(width * done / todo) : width;
    std::printf("\r[%.*s%*s] %lld/%lld | loss %.4f | %.0f tok/s | ETA %d:%02d   ", fill,
                "##############################", width - fill, "", static_cast<long long>(step),
                static_cast<long long>(total), loss_now, tok_s, static_cast<int>(eta) / 60,
                static_cast<int>(eta) % 60);
    std::fflush(stdout);
  };


  Tensor ids, tgt;
  std::vector<double> tps;
  double loss = NAN, last_eval = NAN;
  const int64_t print_every = std::max<int64_t>(1, cfg.steps_per_print);
  for (int64_t step = start_step + 1; step <= cfg.training.steps; ++step) {
    auto t0 = Clock::now();
    comm::Watchdog::set_step(step);            // [faults] named in timeout reports
    fault_at_step_start(fault, engine, step);  // [faults] test hook
    double sum = 0.0;
    for (int64_t m = 0; m < gas; ++m) {
      auto td = Clock::now();
      sampler.next(ids, tgt);
      data_ms += std::chrono::duration<double, std::milli>(Clock::now() - td).count();
      const float micro_loss = engine.forward(ids, tgt);
      zero::check_loss(engine, micro_loss, step, m);  // [faults] a NaN/inf loss, named
      sum += micro_loss;
      fault_before_backward(fault, engine, step, m);  // [faults] test hook
      engine.backward();
      engine.step();
    }
    double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    // wall_clock_breakdown: this step's times, and their sum since the last print.
    const zero::Timings tm = engine.take_timings();
    const double step_data_ms = data_ms;
    data_ms = 0;
    acc.forward += tm.forward;
    acc.backward += tm.backward;
    acc.reduce_wait += tm.reduce_wait;
    acc.step += tm.step;
    acc.allgather += tm.allgather;
    acc.comm_busy += tm.comm_busy;
    acc_data_ms += step_data_ms;
    ++acc_steps;
    loss = sum / static_cast<double>(gas);
    // The job's loss is the mean over ranks (each saw its own share of the batch); the same
    // all-reduce carries the stop flag, so every rank sees a signal at the same step.
    bool stop = g_stop_signal != 0;
    if (host_comm) {
      Tensor t = Tensor::from_vector({static_cast<float>(loss), stop ? 1.f : 0.f}, {2});
      host_comm->all_reduce(t, comm::ReduceOp::sum)->wait();
      loss = t.data<float>()[0] / static_cast<float>(world);
      stop = t.data<float>()[1] > 0.f;
    }
    // [faults] A step skipped for a non-finite gradient (bf16.check_grad_overflow, fp16) may
    // have a non-finite loss too: that is the documented skip, not divergence.
    ZT_CHECK(std::isfinite(loss) || engine.last_step_skipped(), "loss is ", loss, " at step ", step,
             ": training diverged (lower optimizer.params.lr or set gradient_clipping)");
    double tok_s = static_cast<double>(tokens_per_step) / dt;
    tps.push_back(tok_s);
    bool eval_now = cfg.training.eval_interval > 0 &&
                    (step % cfg.training.eval_interval == 0 || step == cfg.training.steps);
    // Rank 0 evaluates; at stage 3 every rank must (each unit is gathered collectively).
    const bool evaluator = lead || engine.partitioned_params();
    if (eval_now && evaluator) last_eval = eval_loss(engine, data.val, cfg);
    if (lead && (step % print_every == 0 || step == cfg.training.steps)) {
      if (tty) std::printf("\r%*s\r", 110, "");  // clear the progress bar
      std::printf("step %6lld | loss %.4f | lr %.3e | grad norm %.4f | %7.1f ms/step | %8.0f tok/s",
                  static_cast<long long>(step), loss, engine.lr(), engine.grad_norm(), dt * 1e3, tok_s);
      if (cfg.fp16.enabled) std::printf(" | scale %g", engine.loss_scale());
      if (eval_now) std::printf(" | eval loss %.4f", last_eval);
      std::printf("\n");
      if (cfg.wall_clock_breakdown) {
        // DeepSpeed's breakdown, averaged per optimizer step since the last print.
        double n = std::max<double>(1, static_cast<double>(acc_steps));
        std::printf("  time (ms) | forward: %.2f | backward: %.2f | backward_reduce_wait: %.2f | "
                    "step: %.2f | allgather: %.2f | comm (busy, overlapped or not): %.2f | "
                    "data: %.2f\n",
                    acc.forward / n, acc.backward / n, acc.reduce_wait / n, acc.step / n,
                    acc.allgather / n, acc.comm_busy / n, acc_data_ms / n);
      }
      acc = zero::Timings{};
      acc_data_ms = 0;
      acc_steps = 0;
      std::fflush(stdout);
    }
    progress(step, loss, tok_s);
    if (!monitors->empty()) {
      const int64_t samples = step * samples_per_step;
      monitors->write_scalar("Train/Samples/train_loss", loss, samples);
      monitors->write_scalar("Train/Samples/lr", engine.lr(), samples);
      monitors->write_scalar("Train/Samples/loss_scale", engine.loss_scale(), samples);
      monitors->write_scalar("Train/Samples/grad_norm", engine.grad_norm(), samples);
      if (eval_now) monitors->write_scalar("Train/Samples/eval_loss", last_eval, samples);
    }
    if (jlog.is_open()) {
      nlohmann::json j = {{"step", step}, {"loss", loss}, {"lr", engine.lr()},
                          {"grad_norm", engine.grad_norm()}, {"loss_scale", engine.loss_scale()},
                          {"step_ms", dt * 1e3}, {"tokens_per_s", tok_s}};
      if (eval_now) j["eval_loss"] = last_eval;
      if (cfg.wall_clock_breakdown)
        j["time_ms"] = {{"forward", tm.forward},     {"backward", tm.backward},
                        {"backward_reduce_wait", tm.reduce_wait}, {"step", tm.step},
                        {"allgather", tm.allgather}, {"comm_busy", tm.comm_busy},
                        {"data", step_data_ms}};
      jlog << j.dump() << "\n";
    }
    if (stop) {
      // Preemption (Slurm sends SIGUSR1/SIGTERM before the time limit): save and leave with
      // kExitPreempted so that the batch script can requeue and the next run resumes.
      if (lead)
        std::printf("signal received: saving at step %lld and exiting (code %d)\n",
                    static_cast<long long>(step), kExitPreempted);
      std::fflush(stdout);  // before the save: a second SIGINT during it exits without flushing
      if (!ckpt_dir.empty()) save(step, true);
      else if (lead)
        std::printf("note: checkpoint.dir is not set: nothing saved\n");
      if (comm) comm->barrier();
      return kExitPreempted;
    }
    if (cfg.checkpoint.interval > 0 && step % cfg.checkpoint.interval == 0 &&
        step != cfg.training.steps)
      save(step, false);
  }
  if (tty) std::printf("\r%*s\r", 110, "");
  if (cfg.training.steps > start_step) save(cfg.training.steps, true);  // the final save
  if ((lead || engine.partitioned_params()) && cfg.training.steps > 0 && std::isnan(last_eval))
    last_eval = eval_loss(engine, data.val, cfg);
  monitors->flush();

  std::vector<double> sorted = tps;
  std::sort(sorted.begin(), sorted.end());
  double median_tps = sorted.empty() ? 0.0 : sorted[sorted.size() / 2];
  if (lead)
    std::printf("done: %lld steps, final loss %.4f, eval loss %.4f, median %.0f tokens/s, "
                "%lld skipped\n",
                static_cast<long long>(cfg.training.steps), loss, last_eval, median_tps,
                static_cast<long long>(engine.skipped_steps()));
  ms = engine.model_state_bytes();  // stage 3: the pool's peak is known now
  if (jlog.is_open()) {
    nlohmann::json s = {{"event", "summary"}, {"steps", cfg.training.steps},
                        {"final_loss", loss}, {"eval_loss", last_eval},
                        {"tokens_per_s", median_tps}, {"ranks", world}, {"stage", cfg.zero.stage},
                        {"skipped_steps", engine.skipped_steps()},
                        {"dtype", dtype_name(engine.model_params().dtype())},
                        {"device", device.str()}, {"params", engine.num_parameters()},
                        {"model_state_bytes",
                         {{"params", ms.params}, {"grads", ms.grads}, {"optimizer", ms.optimizer},
                          {"workspace", ms.workspace}}},
                        {"model_state_formula_bytes",
                         {{"params", mf.params}, {"grads", mf.grads}, {"optimizer", mf.optimizer}}}};
    if (device.is_cuda()) {  // the caching allocator's high-water mark on this rank's GPU
      const cuda::AllocatorStats st = cuda::allocator_stats(device.index);
      s["device_peak_bytes"] = st.peak_in_use;
      s["device_reserved_bytes"] = st.reserved;
    }
    jlog << s.dump() << "\n";
  }
  if ((lead || engine.partitioned_params()) && opt.sample_chars > 0 && cfg.model.vocab_size == 256) {
    std::string text = sample_text(engine, "\n", opt.sample_chars,
                                   static_cast<uint64_t>(cfg.training.seed) + 7);
    for (char& c : text)
      if (static_cast<unsigned char>(c) < 32 && c != '\n' && c != '\t') c = '?';
    if (lead)
      std::printf("--- sample (%d bytes, temperature 0.8) ---\n%s\n---\n", opt.sample_chars,
                  text.c_str());
  }
  if (trace) {
    trace->write_rank_file(opt.trace);
    if (comm) comm->barrier();
    if (lead) {
      io::merge_traces(opt.trace, world);
      std::printf("trace: %s (open in https://ui.perfetto.dev or chrome://tracing)\n",
                  opt.trace.c_str());
    }
  }
  if (lead && comm && cfg.comms_logger.enabled)
    std::printf("%s", comm->log().table("comms_logger (rank 0)").c_str());
  if (comm) comm->barrier();  // nobody leaves while rank 0 still evaluates or samples
  return 0;
}

}  // namespace zt::app
