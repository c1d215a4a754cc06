// zero/checkpoint.cpp: Engine::save_checkpoint / load_checkpoint (DeepSpeed's API) on the atomic
// checkpoint store (io/checkpoint_store.h).
//
// Format: whatever the ZeRO stage, rank r of a world of W writes the contiguous range
// [r * size, (r + 1) * size) of every flat buffer (clipped to the parameter count): the model's
// weights ("params", in the model dtype), and with optimizer state the fp32 "master" weights (mixed
// precision) and Adam's "exp_avg" / "exp_avg_sq". At stage 0 every rank holds everything but still
// writes only its range, so a save costs the same at every stage and no rank gathers through rank
// 0. The manifest's partition map records the ranges; a load at another world size or stage reads,
// for the range each rank now needs, the overlapping pieces of the old shards (resharding). The
// engine's counters, the loss scaler and the optimizer's step go in the manifest's metadata.
//
// Protocol (io/checkpoint_async.h, persist_checkpoint): rank 0 opens the temporary folder; every
// rank writes and fsyncs its shard; sizes and checksums are gathered; rank 0 writes the manifest and
// publishes the tag, then `latest`. Any rank's failure is agreed on and the temporary folder is
// removed: the previous checkpoint stays intact. The agreement never runs on the training
// communicator (DESIGN.md): a synchronous save uses ckpt_comm_, a dup made at construction, whose
// first collective times out (a save called on one rank only fails with a message, not a hang).
//
// Asynchronous saves (SaveOptions::async: `checkpoint.async`, `nebula_config`). Training stops
// only to (1) agree with the other ranks on ckpt_comm_ whether this save persists (Nebula's
// persistent_time_interval, on rank 0's clock: a save requested sooner after the previous persist
// began is skipped, not queued: the next due save carries newer state anyway, and a queue would
// hold a second copy of the state in memory), (2) wait for the previous persist if it is still
// running (reported as SaveResult::previous.wait_ms), and (3) copy this rank's ranges into a
// host snapshot reused from save to save. A background thread then runs the same protocol on a
// communicator of its own (one more MPI_Comm_dup, made at the first async save, so its collectives
// never interleave with training's or with a synchronous save's), at lower CPU priority. The
// snapshot is this rank's byte ranges only (what it would write), so it fits any stage.
// Nothing the engine owns is touched by the background thread. A failed persist is agreed by all
// ranks in the background and rethrown by the next wait (next due save, wait_checkpoint, load).
//
// Load reads every byte once (io/checkpoint_load.h): each rank plans the pieces it needs (its
// ranges of every buffer, from the shards that hold them), and the XXH3 of each shard is computed
// while it is read into the engine, not in a read before. Who verifies what: a rank reading only
// part of a file cannot checksum it, so each shard is verified by exactly one rank, the one that
// reads most of its bytes (ties: the lowest rank): a rank that reads a file whole (its own shard at
// the same world size; every shard at stage 0) hashes it for free, and a shard nobody reads whole
// (resharding, load_module_only) costs its verifier the bytes it would not have read. Every rank
// checks client_state.json (a few bytes) itself. Three small all-gathers on ckpt_comm_ per tag:
// (1) every rank opened the manifest, checked every file's size and its shards' headers (a
// truncated or missing file is found here, before any byte lands) and names the same tag; (2) the
// bytes each rank reads of each shard (the verifier election); (3) after the read, the verdicts.
// Only after (3) does derived state change (dtype conversions, widening, the offloaded state, the
// counters). A mismatch after bytes landed: with tag "" the next candidate (latest, then the
// newest tag whose files have their sizes) is loaded over them, which rewrites every one of them;
// with a tag given, or when no candidate verifies, the weights, master and optimizer state are
// made NaN and the error says so: the engine never holds a corrupt tag's values. (Loading into a
// staging copy first would keep the previous state instead, at twice the memory.)
//
// A GPU engine (zero/engine.h): everything below reads and writes host bytes. The optimizer's
// state() comes down by itself (a device optimizer copies it down, and reads it back before its
// next step); the weights and the fp32 master do not, so for the call host copies replace those
// device buffers (Engine::HostSwap), and a load copies them back up at the end.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "core/ops.h"
#include "io/checkpoint_async.h"
#include "io/checkpoint_checksum.h"
#include "io/checkpoint_load.h"
#include "io/checkpoint_store.h"
#include "io/checkpoint_writer.h"
#include "precision/convert.h"
#include "zero/engine.h"
#include "zero/onebit.h"  // [1-bit] add_rank_state / load_rank_state

namespace zt::zero {

// Host copies of a GPU engine's weight buffers in place of the device ones for one save or load
// (a no-op on the CPU). A save needs the weights as saved (params16 with mixed precision, else the
// fp32 buffer) and the fp32 master; a load rewrites them all, and its result (NaN weights after a
// failed load included) goes back to the device, with the host master of an optimizer stepping on
// the host (fp32 training) refreshed from the loaded weights.
struct Engine::HostSwap {
  Engine& e;
  bool load;
  Tensor params, params16, master;  // the device buffers, put back at the end
  static Tensor host_copy(const Tensor& t) {
    Tensor h = Tensor::empty(t.shape(), t.dtype());
    ops::copy(t, h);
    return h;
  }
  HostSwap(Engine& engine, bool is_load) : e(engine), load(is_load) {
    if (!e.on_device()) return;
    e.sync_device();
    if (load || !e.mixed()) params = std::exchange(e.params_, host_copy(e.params_));
    if (e.mixed()) params16 = std::exchange(e.params16_, host_copy(e.params16_));
    if (e.master_.defined() && e.master_.device().is_cuda())
      master = std::exchange(e.master_, host_copy(e.master_));
  }
  ~HostSwap() {
    try {
      if (load && params.defined()) {
        ops::copy(e.params_, params);
        if (params16.defined()) ops::copy(e.params16_, params16);
        if (master.defined()) ops::copy(e.master_, master);
        if (!e.mixed() && e.master_.defined() && !master.defined()) {
          const int64_t lo = e.s_.zero_stage == 0 ? 0 : e.part_.begin();
          ops::copy(e.params_.flat_view(lo, {e.master_.numel()}), e.master_);
        }
      }
    } catch (const std::exception& x) {  // a CUDA failure: the next device op reports it again
      std::fprintf(stderr, "zerotrain: copying the loaded weights to %s failed: %s\n",
                   e.s_.device.str().c_str(), x.what());
    }
    if (params.defined()) e.params_ = std::move(params);
    if (params16.defined()) e.params16_ = std::move(params16);
    if (master.defined()) e.master_ = std::move(master);
  }
  HostSwap(const HostSwap&) = delete;
  HostSwap& operator=(const HostSwap&) = delete;
};

struct AsyncCheckpointState {
  std::unique_ptr<comm::Communicator> comm;  // the background's own (world > 1)
  io::ShardSnapshot snapshot;                // reused: its pages stay mapped between saves
  io::BackgroundJob<io::PersistResult> job;  // declared last: joined before the rest goes
  std::string tag;                           // of the pending persist
  std::optional<std::chrono::steady_clock::time_point> last_start;  // rank 0: last persist began
  ~AsyncCheckpointState() {
    if (!job.pending()) return;
    try {
      job.wait();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zerotrain: background checkpoint persist of '%s' failed: %s\n",
                   tag.c_str(), e.what());
    }
  }
};

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// One flag per rank -> max over ranks; true when some rank failed.
bool any_failed(comm::Communicator& c, bool failed) {
  Tensor t = Tensor::from_vector({failed ? 1.f : 0.f}, {1});
  c.all_reduce(t, comm::ReduceOp::max)->wait();
  return t.data<float>()[0] > 0.f;
}

// Every rank's `mine` (the same length on every rank), rank after rank.
std::vector<uint64_t> all_gather_u64(comm::Communicator& c, const std::vector<uint64_t>& mine) {
  const int64_t n = static_cast<int64_t>(mine.size());
  Tensor in = Tensor::empty({2 * n}, DType::i32);
  Tensor out = Tensor::empty({2 * n * c.world()}, DType::i32);
  std::memcpy(in.raw(), mine.data(), static_cast<size_t>(n) * 8);
  c.all_gather(in, out)->wait();
  std::vector<uint64_t> all(static_cast<size_t>(n * c.world()));
  std::memcpy(all.data(), out.raw(), all.size() * 8);
  return all;
}

// The agreement persist_checkpoint needs, on `c` (nullptr: one rank). `on_timeout(phase, error)`
// turns a CommError (a timeout) into the message for the user.
io::PersistCollectives collectives_on(
    comm::Communicator* c, std::function<std::string(const char*, const char*)> on_timeout) {
  io::PersistCollectives pc;
  if (!c) return pc;
  pc.any_failed = [c, on_timeout](bool failed, const char* phase) {
    try {
      return any_failed(*c, failed);
    } catch (const CommError& e) {
      throw CheckpointError(on_timeout(phase, e.what()));
    }
  };
  pc.gather = [c](uint64_t size, uint64_t checksum) {
    const int world = c->world();
    Tensor mine = Tensor::empty({4}, DType::i32), all = Tensor::empty({4 * world}, DType::i32);
    uint64_t pair[2] = {size, checksum};
    std::memcpy(mine.raw(), pair, 16);
    c->all_gather(mine, all)->wait();
    std::vector<uint64_t> flat(2 * static_cast<size_t>(world));
    std::memcpy(flat.data(), all.raw(), 16 * static_cast<size_t>(world));
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (int r = 0; r < world; ++r) out.emplace_back(flat[2 * r], flat[2 * r + 1]);
    return out;
  };
  pc.first_error = [c](const std::string& error) {
    // A fixed-size slot per rank (messages are cut at 1 KiB), all-gathered as i32 words.
    constexpr int64_t kWords = 256;
    const int world = c->world();
    Tensor mine = Tensor::zeros({kWords}, DType::i32), all = Tensor::empty({kWords * world}, DType::i32);
    std::memcpy(mine.raw(), error.data(), std::min<size_t>(error.size(), kWords * 4 - 1));
    c->all_gather(mine, all)->wait();
    for (int r = 0; r < world; ++r) {
      const char* text = static_cast<const char*>(all.raw()) + r * kWords * 4;
      if (text[0] != '\0') return detail::str_cat("rank ", r, ": ", std::string(text, strnlen(text, kWords * 4)));
    }
    return std::string();
  };
  return pc;
}

}  // namespace

bool Engine::checkpoint_persisting() const { return async_ckpt_ && async_ckpt_->job.busy(); }

CheckpointWait Engine::wait_checkpoint() {
  CheckpointWait w;
  if (!async_ckpt_ || !async_ckpt_->job.pending()) return w;
  w.tag = async_ckpt_->tag;
  const auto t0 = Clock::now();
  const bool running = async_ckpt_->job.busy();
  io::PersistResult r;
  try {
    r = async_ckpt_->job.wait();
  } catch (const std::exception& e) {
    throw CheckpointError(detail::str_cat("save_checkpoint: the background persist of '", w.tag,
                                          "' failed: ", e.what()));
  }
  w.wait_ms = running ? ms_since(t0) : 0.0;
  w.persist_ms = r.total_ms;
  w.bytes = part_.rank == 0 ? r.tag_bytes : r.shard_bytes;
  return w;
}

SaveResult Engine::save_checkpoint(const std::string& dir, const std::string& tag_in,
                                   const std::string& client_state_json, const SaveOptions& opts) {
  const auto t_call = Clock::now();
  const std::string tag = tag_in.empty() ? io::default_tag(global_step_) : tag_in;
  io::check_tag(tag);
  ZT_CHECK(micro_step_ % s_.gradient_accumulation_steps == 0, "save_checkpoint at micro-step ",
           micro_step_, ": save at the end of an accumulation window (after step() returned true)");
  for (auto& w : pending_) w->wait();
  pending_.clear();
  const int rank = part_.rank, world = part_.world;
  comm::Communicator* c = ckpt_comm_.get();  // a dup: saves never interleave with training ops
  auto not_joined = [&](const char* phase, const char* what) {
    const std::string after =
        std::string(phase) == "begin" ? "" : std::string(" (after the ") + phase + " phase)";
    return detail::str_cat("save_checkpoint(", dir, ", ", tag, ") on rank ", rank,
                           ": the other ranks did not join within ", s_.checkpoint_timeout_s,
                           " s", after, ": save_checkpoint is collective and must be called on ",
                           "every rank (", what, ")");
  };
  SaveResult res;
  res.tag = tag;

  // A background thread may call MPI while training does only with MPI_THREAD_MULTIPLE.
  bool background = opts.async;
  if (background && c && !comm::Bootstrap::instance().thread_multiple()) {
    background = false;
    res.message = "MPI does not provide MPI_THREAD_MULTIPLE: the checkpoint was persisted "
                  "synchronously";
  }
  if (opts.async && !async_ckpt_) async_ckpt_ = std::make_shared<AsyncCheckpointState>();

  // Async: do we persist now? Rank 0's clock decides; the agreement is this save's first
  // collective, so a save called on one rank only times out here.
  if (opts.async) {
    AsyncCheckpointState& st = *async_ckpt_;
    double since = st.last_start ? std::chrono::duration<double>(Clock::now() - *st.last_start).count()
                                 : 0.0;
    bool due = opts.force || !st.last_start || since >= opts.min_interval_s;
    if (c) {
      Tensor t = Tensor::from_vector({rank == 0 && due ? 1.f : 0.f}, {1});
      try {
        c->all_reduce(t, comm::ReduceOp::max)->wait();
      } catch (const CommError& e) {
        throw CheckpointError(not_joined("begin", e.what()));
      }
      due = t.data<float>()[0] > 0.f;
    }
    if (!due) {
      res.mode = SaveResult::Mode::skipped;
      res.message = detail::str_cat(
          "not persisted: ", rank == 0 ? std::to_string(static_cast<int64_t>(since)) : "some",
          " s since the previous persist began, less than the persistent_time_interval of ",
          opts.min_interval_s, " s");
      res.blocked_ms = ms_since(t_call);
      return res;
    }
  }
  // The previous persist must be complete first (tags and `latest` are published in order); this
  // is the only time training waits for the disk.
  if (async_ckpt_) res.previous = wait_checkpoint();

  // This rank's range of every flat buffer, borrowed (no copy): the weights ("params", in the
  // model dtype), the fp32 master (mixed precision), the optimizer's state ("exp_avg", ...).
  HostSwap host_weights(*this, false);  // a GPU engine: host copies of the weights
  const int64_t lo = std::min(part_.begin(), part_.numel), hi = std::min(part_.end(), part_.numel);
  const int64_t n = hi - lo;
  const int64_t opt_lo = s_.zero_stage == 0 ? 0 : part_.begin();  // start of the optimizer range
  const Tensor& P = model_params();
  // The weights as the engine holds them: the whole padded flat buffer, or (stage 3) only this
  // rank's partition, whose element 0 is flat element part_.begin().
  const int64_t p_lo = P.numel() == part_.padded ? lo : lo - part_.begin();
  io::SafetensorsWriter w;
  w.add("params", P.flat_view(p_lo, {n}));
  if (mixed() && !offload_) w.add("master", master_.flat_view(lo - opt_lo, {n}));
  for (auto& [name, buf] : optimizer_->state())
    w.add(name, DType::f32, {n}, buf->data() + (lo - opt_lo));
  // [1-bit] per-rank optimizer state, whole (zero/onebit.h; empty for other optimizers).
  if (s_.zero_stage == 0 && !offload_)
    add_rank_state(*optimizer_, mixed() ? master_.data<float>() : params_.data<float>(), w);
  // offload_optimizer: the state is in host memory or the swap file; copy this rank's range out
  // (the fp32 master too, with mixed precision: fp32 training's params are the master already).
  std::vector<Tensor> offloaded;
  if (offload_)
    for (const std::string& name : OptimizerOffload::state_names()) {
      if (name == "master" && !mixed()) continue;
      offloaded.push_back(Tensor::empty({n}));
      offload_->read_state(name, lo - opt_lo, n, offloaded.back().data<float>());
      w.add(name, offloaded.back());
    }

  io::PersistRequest req;
  req.dir = dir;
  req.tag = tag;
  req.rank = rank;
  req.world = world;
  req.keep = opts.keep;
  req.commit.save_latest = opts.save_latest;
  req.write.on_progress = opts.on_write_progress;
  if (rank == 0) {
    io::Manifest& m = req.manifest;
    m.global_step = global_step_;
    m.zero_stage = s_.zero_stage;
    m.config_hash = opts.config_hash;
    m.dtypes = {{"params", P.dtype()}, {"optimizer", DType::f32}};
    m.buffers["flat"] = {P.dtype(), static_cast<uint64_t>(part_.numel)};
    for (int r = 0; r < world; ++r) {
      uint64_t b = static_cast<uint64_t>(std::min(r * part_.size, part_.numel));
      uint64_t e = static_cast<uint64_t>(std::min((r + 1) * part_.size, part_.numel));
      m.partitions.push_back({r, {{"flat", b, e}}});
    }
    precision::LossScalerState ls = scaler_.state();
    json engine = {{"global_step", global_step_},   {"micro_step", micro_step_},
                   {"lr_iteration", lr_iteration_}, {"optimizer_step", optimizer_->step_count()},
                   {"optimizer", optimizer_->name()}, {"model_dtype", dtype_name(P.dtype())},
                   {"numel", part_.numel},
                   {"loss_scaler", {{"dynamic", ls.dynamic}, {"scale", ls.scale},
                                    {"iteration", ls.iteration},
                                    {"last_overflow_iteration", ls.last_overflow_iteration},
                                    {"hysteresis", ls.hysteresis},
                                    {"skipped_steps", ls.skipped_steps}}}};
    m.metadata["engine"] = engine.dump();
    // What a tool needs to name the weights without the config (zerotrain ckpt consolidate,
    // generate): the model's sizes and every parameter's name, shape and flat offset.
    const nn::GPTConfig& g = model_.config();
    m.metadata["model"] = json({{"type", "gpt"}, {"n_layer", g.n_layer}, {"n_embd", g.n_embd},
                                {"n_head", g.n_head}, {"seq_len", g.seq_len},
                                {"vocab_size", g.vocab_size}, {"tie_weights", g.tie_weights}})
                              .dump();
    json params = json::array();
    for (nn::Parameter* p : model_.parameters())
      params.push_back({{"name", p->name}, {"shape", p->shape}, {"offset", p->flat_offset}});
    m.metadata["parameters"] = params.dump();
    req.client_state_json = client_state_json;  // checksummed like the shards
  }

  if (!background) {
    req.shard = &w;
    try {
      io::persist_checkpoint(req, collectives_on(c, not_joined));
    } catch (const CheckpointError& e) {
      const std::string m = e.what();
      throw CheckpointError(m.rfind("save_checkpoint", 0) == 0 ? m : "save_checkpoint: " + m);
    }
    res.mode = SaveResult::Mode::sync;
    res.blocked_ms = ms_since(t_call);
    return res;
  }

  // Asynchronous: snapshot, then persist on the background thread.
  AsyncCheckpointState& st = *async_ckpt_;
  if (c && !st.comm) {  // collective: every rank is here (the agreement above said so)
    comm::CommOptions o;
    // The background waits for the slowest rank's disk, not for a rank that may not have called.
    o.timeout_s = std::max(600.0, 5 * s_.checkpoint_timeout_s);
    st.comm = comm::make_mpi_communicator(o);
  }
  const auto t_snap = Clock::now();
  st.snapshot.assign(w);
  res.snapshot_ms = ms_since(t_snap);
  req.shard = &st.snapshot.writer();
  const double bg_timeout = st.comm ? st.comm->options().timeout_s : 0.0;
  io::PersistCollectives pc = collectives_on(
      st.comm.get(), [tag, rank, bg_timeout](const char* phase, const char* what) {
        return detail::str_cat("background persist of '", tag, "' on rank ", rank,
                               ": the other ranks did not agree within ", bg_timeout,
                               " s after the ", phase, " phase (", what, ")");
      });
  st.tag = tag;
  st.job.start([req = std::move(req), pc = std::move(pc)]() { return io::persist_checkpoint(req, pc); },
               opts.writer_nice);
  if (rank == 0) st.last_start = Clock::now();
  res.mode = SaveResult::Mode::async;
  res.blocked_ms = ms_since(t_call);
  return res;
}

LoadResult Engine::load_checkpoint(const std::string& dir, const std::string& tag_in,
                                   const LoadOptions& opts) {
  wait_checkpoint();  // a background persist of ours finishes (and is published) first
  for (auto& w : pending_) w->wait();
  pending_.clear();
  HostSwap host_weights(*this, true);  // a GPU engine: loads into host copies, copied up at the end
  const int rank = part_.rank;
  comm::Communicator* c = ckpt_comm_.get();  // nullptr: one rank
  // The agreements run on ckpt_comm_ (a dup with a timeout): a load called on one rank only fails
  // with a message instead of hanging.
  auto gather = [&](const std::vector<uint64_t>& mine) {
    if (!c) return mine;
    try {
      return all_gather_u64(*c, mine);
    } catch (const CommError& e) {
      throw CheckpointError(detail::str_cat(
          "load_checkpoint(", dir, ") on rank ", rank, ": the other ranks did not join within ",
          s_.checkpoint_timeout_s, " s: load_checkpoint is collective and must be called on ",
          "every rank (", e.what(), ")"));
    }
  };
  const int world = c ? c->world() : 1;

  // offload_param nvme: the partition is loaded in memory, then written back to the drive below.
  if (pswap_) part_params_ = model_params();
  // Where the weights land: every rank needs all of them, except at stage 3 (its partition only).
  const int64_t wa = partitioned_params() ? std::min(part_.begin(), part_.numel) : 0;
  const int64_t wb = partitioned_params() ? std::min(part_.end(), part_.numel) : part_.numel;
  Tensor P = partitioned_params() ? part_params_.flat_view(wa - part_.begin(), {wb - wa})
             : mixed()            ? params16_.flat_view(0, {wb})
                                  : params_.flat_view(0, {wb});
  // This rank's optimizer range [lo, hi) (padded), of which [a, b) holds parameters.
  const int64_t lo = s_.zero_stage == 0 ? 0 : part_.begin();
  const int64_t hi = s_.zero_stage == 0 ? part_.padded : part_.end();
  const int64_t a = std::min(lo, part_.numel), b = std::min(hi, part_.numel);
  const bool want_optimizer = opts.load_optimizer_states && !opts.load_module_only;

  // One attempt at one tag. Everything that can fail before a byte lands (manifest, sizes, shard
  // headers, the plan) is agreed first, so a truncated or missing file never touches the engine.
  // Then every piece is read once, each shard verified by one rank while it streams, and the
  // verdicts agreed; only then does anything derived (conversions, widening, the offloaded state,
  // counters) change. `touched`: verified-later bytes were written into the engine's buffers.
  struct Attempt {
    bool ok = false, touched = false;
    std::string problem;
  };
  auto attempt = [&](const std::string& tag, LoadResult& res) -> Attempt {
    Attempt at;
    std::vector<io::ShardPiece> pieces;
    std::optional<io::TagLoader> L;
    std::string problem;       // this rank's first problem
    bool incompatible = false;  // a checkpoint of another model: an error, not a fallback
    // Dtype conversions: pieces land in staging tensors, converted after verification.
    struct Convert {
      Tensor staging;
      Tensor dst;         // or
      float* raw = nullptr;
    };
    std::vector<Convert> converts;
    // Staging for the offloaded state (written to the offload store after verification).
    std::map<std::string, Tensor> offloaded;
    bool master_read = false, weights_from_master = false;
    json engine;
    int old_world = 0;
    try {
      L.emplace(dir, tag);
      const io::Manifest& m = L->manifest();
      old_world = static_cast<int>(m.partitions.size());
      auto sizes = L->check_sizes();
      if (!sizes.empty()) throw CheckpointError(sizes[0]);
      auto it = m.buffers.find("flat");
      if (it == m.buffers.end() || static_cast<int64_t>(it->second.numel) != part_.numel) {
        incompatible = true;
        throw CheckpointError(
            it == m.buffers.end()
                ? detail::str_cat("load_checkpoint: ", dir, "/", tag,
                                  " has no flat buffer in its manifest")
                : detail::str_cat("load_checkpoint: ", dir, "/", tag, " holds ", it->second.numel,
                                  " parameters but this model has ", part_.numel,
                                  ": a different model config"));
      }
      engine = json::parse(m.metadata.at("engine"));
      // Pieces of `name` for elements [x0, x1) into dst (dst[0] is element x0; raw: f32 memory
      // outside any Tensor, the optimizer's state vectors). Same dtype: straight into the
      // destination (loads run at read() speed); else through a staging tensor.
      auto plan = [&](const std::string& name, int64_t x0, int64_t x1, Tensor* dst, float* raw) {
        for (const io::RankPartition& rp : m.partitions) {
          const io::FlatRange& fr = rp.ranges.at(0);
          int64_t x = std::max<int64_t>(x0, static_cast<int64_t>(fr.begin));
          int64_t y = std::min<int64_t>(x1, static_cast<int64_t>(fr.end));
          if (x >= y) continue;
          const io::SafetensorsReader& rd = L->shard(rp.rank);
          const io::SafetensorsTensorInfo* info = rd.find(name);
          if (!info)
            throw CheckpointError(detail::str_cat("load_checkpoint: ", rd.path(), " has no `",
                                                  name, "`"));
          const size_t es = dtype_size(info->dtype);
          io::ShardPiece p{rp.rank, name,
                           static_cast<uint64_t>(x - static_cast<int64_t>(fr.begin)) * es,
                           static_cast<uint64_t>(y - x) * es, nullptr};
          const DType want = dst ? dst->dtype() : DType::f32;
          if (info->dtype == want) {
            p.dst = dst ? dst->flat_view(x - x0, {y - x}).raw() : raw + (x - x0);
          } else {
            Convert cv;
            cv.staging = Tensor::empty({y - x}, info->dtype);
            if (dst) cv.dst = dst->flat_view(x - x0, {y - x});
            else cv.raw = raw + (x - x0);
            p.dst = cv.staging.raw();
            converts.push_back(std::move(cv));
          }
          pieces.push_back(std::move(p));
        }
      };
      const bool has_master = m.dtypes.at("params") != DType::f32;  // a mixed-precision save
      // fp32 training from a mixed-precision save: the fp32 master is the finer copy.
      weights_from_master = !mixed() && has_master && !opts.load_module_only;
      plan(weights_from_master ? "master" : "params", wa, wb, &P, nullptr);
      master_read = mixed() && has_master && want_optimizer;
      if (mixed() && !offload_ && master_read) {
        Tensor mv = master_.flat_view(0, {b - a});
        plan("master", a, b, &mv, nullptr);
      }
      if (offload_) {
        offloaded["master"] = Tensor::empty({hi - lo});
        if (master_read) plan("master", a, b, nullptr, offloaded["master"].data<float>());
        if (want_optimizer)
          for (const std::string& name : OptimizerOffload::state_names()) {
            if (name == "master") continue;
            Tensor t = Tensor::empty({hi - lo});
            ops::fill(t, 0.f);
            plan(name, a, b, nullptr, t.data<float>());
            offloaded[name] = t;
          }
      }
      if (want_optimizer)
        for (auto& [name, buf] : optimizer_->state()) plan(name, a, b, nullptr, buf->data());
    } catch (const std::exception& e) {
      problem = e.what();
    }

    // Agreement 1: every rank planned (else nobody reads); the same tag; who verifies which shard.
    uint64_t tag_hash = 0;
    {
      io::Checksum h;
      h.update(tag.data(), tag.size());
      tag_hash = h.digest();
    }
    const uint64_t status = problem.empty() ? 0 : incompatible ? 2 : 1;
    std::vector<uint64_t> head = gather({status, tag_hash, static_cast<uint64_t>(old_world)});
    int first_bad = -1;
    for (int r = 0; r < world; ++r) {
      if (head[3 * r] == 2) {  // another model: every rank read the same manifest, all throw
        throw CheckpointError(problem.empty() ? detail::str_cat("load_checkpoint: ", dir, "/", tag,
                                                                " is not for this model (rank ", r,
                                                                ")")
                                              : problem);
      }
      if (head[3 * r] != 0 && first_bad < 0) first_bad = r;
      if (head[3 * r + 1] != tag_hash || head[3 * r + 2] != head[2])
        throw CheckpointError(detail::str_cat("load_checkpoint(", dir, "): the ranks chose ",
                                              "different tags (rank ", rank, ": '", tag,
                                              "'): do they see the same folder?"));
    }
    if (first_bad >= 0) {
      at.problem = !problem.empty() ? problem
                                    : detail::str_cat("rank ", first_bad, " could not read '", tag,
                                                      "' (its error is in its log)");
      return at;
    }
    // Each shard is verified by the rank that reads most of it (ties: the lowest rank), so a rank
    // that reads a file whole checksums it for free; a shard nobody reads much of costs its
    // verifier one extra read.
    std::vector<uint64_t> mine(static_cast<size_t>(old_world), 0);
    for (const io::ShardPiece& p : pieces) mine[static_cast<size_t>(p.shard)] += p.nbytes;
    std::vector<uint64_t> all = world > 1 ? gather(mine) : mine;
    std::vector<int> verify;
    for (int k = 0; k < old_world; ++k) {
      int best = 0;
      auto at_rank = [&](int r) { return all[static_cast<size_t>(r * old_world + k)]; };
      for (int r = 1; r < world; ++r)
        if (at_rank(r) > at_rank(best)) best = r;
      if (best == rank) verify.push_back(k);
    }

    // The one read. client_state.json is small: every rank reads and checks it.
    at.touched = true;
    uint64_t bad_kind = 0, bad_file = 0, bad_sum = 0;  // 1 checksum mismatch, 2 unreadable
    problem.clear();
    try {
      io::FileCheck cs;
      res.client_state = L->read_text(io::kClientStateFile, cs);
      std::vector<io::FileCheck> checks = L->read(pieces, verify);
      checks.push_back(cs);
      for (size_t i = 0; i < checks.size() && problem.empty(); ++i) {
        if (checks[i].ok) continue;
        problem = checks[i].problem;
        bad_kind = checks[i].checksum ? 1 : 2;
        bad_file = i < verify.size() ? static_cast<uint64_t>(verify[i]) : UINT64_MAX;
        bad_sum = checks[i].checksum;
      }
    } catch (const std::exception& e) {
      problem = e.what();
      bad_kind = 2;
      bad_file = UINT64_MAX;
    }
    // Agreement 2: the verdicts. Every rank words the first failure the same way.
    std::vector<uint64_t> verdicts = gather({bad_kind, bad_file, bad_sum});
    for (int r = 0; r < world; ++r) {
      const uint64_t kind = verdicts[3 * r];
      if (kind == 0) continue;
      if (r == rank) at.problem = problem;
      else if (kind == 1 && verdicts[3 * r + 1] != UINT64_MAX) {
        const std::string name = io::shard_file_name(static_cast<int>(verdicts[3 * r + 1]));
        const io::FileRecord* rec = L->manifest().file(name);
        at.problem = detail::str_cat(io::tag_dir(dir, tag), "/", name, ": checksum ",
                                     io::checksum_hex(verdicts[3 * r + 2]), ", the manifest says ",
                                     io::checksum_hex(rec ? rec->checksum : 0),
                                     " (the file is corrupt)");
      } else {
        at.problem = detail::str_cat("rank ", r, " could not read '", tag,
                                     "' (its error is in its log)");
      }
      return at;
    }

    // Verified: now the derived state.
    const io::Manifest& m = L->manifest();
    res.tag = tag;
    res.saved_world_size = m.world_size;
    res.saved_stage = m.zero_stage;
    for (Convert& cv : converts) {
      if (cv.raw) {
        Tensor f = Tensor::empty({cv.staging.numel()});
        ops::copy(cv.staging, f);
        std::memcpy(cv.raw, f.raw(), static_cast<size_t>(f.numel()) * 4);
      } else {
        ops::copy(cv.staging, cv.dst);
      }
    }
    if (mixed() && !partitioned_params()) precision::widen_to_f32(params16_, params_);
    // The fp32 master from the checkpoint's master, else from the weights; what the checkpoint
    // does not cover (the padding after b) from the weights too.
    auto master_from_weights = [&](Tensor& t, int64_t from) {
      if (from >= hi - lo) return;
      Tensor dst = t.flat_view(from, {hi - lo - from});
      if (partitioned_params()) {
        Tensor src = part_params_.flat_view(from, {hi - lo - from});
        precision::widen_to_f32(src, dst);
      } else {
        ops::copy(params_.flat_view(lo + from, {hi - lo - from}), dst);
      }
    };
    const int64_t covered = master_read ? b - a : 0;
    if (mixed() && !offload_) master_from_weights(master_, covered);
    if (offload_) {
      master_from_weights(offloaded["master"], covered);
      for (auto& [name, t] : offloaded) offload_->write_state(name, 0, hi - lo, t.data<float>());
    }
    if (want_optimizer) {
      optimizer_->set_step_count(engine.at("optimizer_step").get<int64_t>());
      // [1-bit] per-rank optimizer state (zero/onebit.h), same world size only; the optimizer may
      // rewrite its span (ZeroOneAdam's own weights between syncs): refresh the 16-bit copy.
      if (s_.zero_stage == 0 && !offload_) {
        float* span = mixed() ? master_.data<float>() : params_.data<float>();
        if (load_rank_state(*optimizer_, span, dir, res.tag, part_.rank, m.world_size,
                            part_.world) &&
            mixed()) {
          Tensor dst = params16_.flat_view(0, {master_.numel()});
          precision::copy_master_to_model(master_, dst);
          precision::widen_to_f32(params16_, params_);
        }
      }
      const json& ls = engine.at("loss_scaler");
      if (ls.at("dynamic").get<bool>() == scaler_.dynamic() && s_.model_dtype == DType::f16) {
        precision::LossScalerState st;
        st.dynamic = ls.at("dynamic");
        st.scale = ls.at("scale");
        st.iteration = ls.at("iteration");
        st.last_overflow_iteration = ls.at("last_overflow_iteration");
        st.hysteresis = ls.at("hysteresis");
        st.skipped_steps = ls.at("skipped_steps");
        scaler_.load_state(st);
      }
    }
    if (!opts.load_module_only) {
      global_step_ = engine.at("global_step");
      micro_step_ = engine.at("micro_step");
      if (opts.load_lr_scheduler_states) lr_iteration_ = engine.at("lr_iteration");
      last_lr_ = s_.scheduler->lr_at(lr_iteration_);
    }
    at.ok = true;
    return at;
  };

  // A failed attempt that wrote into the engine leaves unverified bytes there. When no good tag
  // follows (which would overwrite all of them), the weights, the fp32 master and the optimizer
  // state are made NaN (f32, f16 and bf16 all read 0xff.. as NaN): the engine never trains on a
  // corrupt tag's values, and says so loudly if used. The counters are untouched.
  bool poisoned = false;
  auto poison = [&] {
    std::memset(P.raw(), 0xff, P.nbytes());
    if (pswap_) pswap_->write(0, part_.size, part_params_.raw());
    if (mixed() && !partitioned_params()) precision::widen_to_f32(params16_, params_);
    if (mixed() && !offload_) std::memset(master_.raw(), 0xff, master_.nbytes());
    for (auto& [name, buf] : optimizer_->state())
      std::memset(buf->data(), 0xff, buf->size() * sizeof(float));
    zero_grads();
    if (coord_) coord_->invalidate();
    poisoned = true;
  };
  const char* kPoisoned =
      " (the engine's weights and optimizer state were partly overwritten before the checksum "
      "showed it and are now NaN: load an intact checkpoint or build a new engine)";

  LoadResult res;
  if (!tag_in.empty()) {
    io::check_tag(tag_in);
    Attempt at = attempt(tag_in, res);
    if (!at.ok) {
      if (at.touched) poison();
      throw CheckpointError(detail::str_cat("checkpoint '", tag_in, "' in ", dir,
                                            " is damaged: ", at.problem,
                                            poisoned ? kPoisoned : ""));
    }
  } else {
    // `latest`, then the newest intact tag: resolve_latest's order, but the checksums are checked
    // by the load's own read, not by a read before it.
    io::LoadCandidates lc = io::load_candidates(dir);
    bool loaded = false;
    for (const io::TagInfo& t : lc.tags) {
      Attempt at = attempt(t.tag, res);
      if (at.ok) {
        if (!lc.why.empty()) res.message = io::fallback_message(dir, lc.why, t);
        loaded = true;
        break;
      }
      if (lc.latest && t.tag == *lc.latest)
        lc.why = "`latest` names '" + t.tag + "', which is damaged: " + at.problem;
      if (at.touched) poisoned = true;  // overwritten by the next good attempt, else made NaN
    }
    if (!loaded) {
      if (poisoned) poison();
      const std::string msg =
          io::nothing_intact_message(dir, lc.why, lc.latest.has_value(), lc.tags_seen);
      throw CheckpointError(detail::str_cat("load_checkpoint: no intact checkpoint in ", dir, ": ",
                                            msg, poisoned ? kPoisoned : ""));
    }
  }
  if (pswap_) {  // offload_param nvme: back to the drive
    pswap_->write(0, part_.size, part_params_.raw());
    part_params_ = Tensor();
  }
  zero_grads();
  if (coord_) coord_->invalidate();  // gathered copies hold the old weights
  return res;
}

}  // namespace zt::zero
