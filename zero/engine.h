// zero/engine.h: the Engine, zerotrain's analogue of the engine `deepspeed.initialize` returns.
//
//   Engine engine(model, settings, comm);   // comm: nullptr = one rank
//   for each micro-batch:  loss = engine.forward(ids, targets);  engine.backward();  engine.step();
//
// The engine owns the training state. It re-points every parameter and gradient of the model at one
// flat fp32 buffer each (DESIGN.md: every parameter is a view into a flat buffer), pads the flat
// length so that it divides into `world` equal partitions (zero/partition.h), and runs ZeRO:
//   stage 0  every rank keeps all optimizer state; gradients are all-reduced (averaged);
//   stage 1  rank r keeps the optimizer state of partition r only (Adam's m and v: 8 of the 16
//            bytes per parameter of fp32 training); gradients are all-reduced, rank r updates its
//            partition, and the updated partitions are all-gathered into every rank's parameters;
//   stage 2  as stage 1, but gradients are reduce-scattered: rank r receives the averaged
//            gradient of its partition only (zero/buckets.h has the bucketing and the overlap);
//   stage 3  as stage 2, but the parameters are partitioned too: rank r keeps only partition r of
//            the weights, and each unit's parameters are gathered before it runs and released
//            after (zero/stage3.h: the coordinator, prefetch, persistence, the order check); each
//            unit's gradient is reduce-scattered right after its backward, every micro-batch.
// `step()` is called after every micro-batch, as in DeepSpeed, and acts only at the end of each
// `gradient_accumulation_steps` window: wait for the reductions, global gradient norm (one
// all-reduce of the partitions' squared sums), clipping, the optimizer on this rank's partition,
// the learning-rate schedule, and the all-gather of the parameters. Gradients are reduced once per
// window, not per micro-batch.
//
// Mixed precision (fp16 / bf16 blocks, zero/engine_step.cpp): the model's weights are stored in the
// 16-bit type (params16: 2 bytes per parameter, what ZeRO counts as "parameters"); the optimizer
// keeps fp32 master weights of its partition beside Adam's m and v (the 12 bytes per parameter the
// paper's K = 12 counts); after each update the master partition is rounded into params16 and the
// 16-bit partitions are all-gathered (half the bytes of fp32). The CPU backend computes in f32, so
// forward and backward read an f32 copy widened from params16 (the "compute copy", reported as a
// workspace, not as model state) and write f32 gradients: gradients accumulate in fp32
// (data_types.grad_accum_dtype fp32, the default; bf16 accumulation under ZeRO is a known cause of
// divergence). With fp16 the loss is scaled (precision/loss_scaler.h): an overflow found on any
// rank skips the step on every rank and lowers the scale.
//
// On a GPU (EngineSettings::device cuda, stages 0-2; the end of zero/engine.cpp): the flat
// buffers, params16, the compute copy, the fp32 master and so the model's parameters live on the
// device; each micro-batch's ids and targets are copied there; casts run as device ops
// (core/ops.h); the overflow flag and the sum of squares come from one fused pass with one host
// read per step (precision::GradChecker); Adam/AdamW is one fused kernel with its state on the GPU
// that also unscales/clips the gradient and writes params16 (Optimizer::step_tensors). Optimizers
// without a device kernel (Lamb, the 1-bit family) step on the host instead: the own gradient
// range is copied down, a host fp32 master of the range is updated, and the result is copied
// (rounded, when mixed) back up. The checkpoint code reads host bytes: a save or load runs on host
// copies of the device buffers, swapped in for the call (zero/checkpoint.cpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/nn/gpt.h"
#include "io/trace.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"
#include "precision/loss_scaler.h"
#include "precision/overflow.h"
#include "zero/buckets.h"
#include "zero/offload.h"
#include "zero/param_swap.h"
#include "zero/partition.h"
#include "zero/stage3.h"

namespace zt::comm {
class Communicator;
class Work;
}

namespace zt::zero {

struct AsyncCheckpointState;  // zero/checkpoint.cpp

// What the engine needs, already resolved from the config (zero/settings.cpp does that).
struct EngineSettings {
  // Where the weights, gradients and activations live: cpu, or cuda:i (stages 0-2; the trainer
  // picks i from the local rank, zero/settings.h resolve_device).
  Device device = Device::cpu();
  int64_t micro_batch = 8;
  int64_t gradient_accumulation_steps = 1;
  double gradient_clipping = 0.0;  // 0 = off; else clip the global norm to this value
  int zero_stage = 0;
  optim::OptimizerKind optimizer_kind = optim::OptimizerKind::adam;
  optim::AdamParams adam;  // Adam / AdamW
  optim::LambParams lamb;  // Lamb: per-tensor trust ratios, norms over whole tensors across ranks
  optim::OneBitParams onebit;  // 1-bit family (optim/onebit_adam.cpp ...): ZeRO stage 0 only
  std::shared_ptr<optim::LRScheduler> scheduler;  // required
  // fp16 / bf16: the dtype the model's weights are stored in (f32: plain fp32 training).
  DType model_dtype = DType::f32;
  precision::LossScalerOptions loss_scaler;  // fp16 only (dynamic when loss_scale == 0)
  // fp32 and bf16 have no loss scale: a non-finite gradient fails the run naming the step, unless
  // skip_nonfinite (bf16.check_grad_overflow) asks to skip it like an fp16 overflow.
  bool skip_nonfinite = false;
  // data_types.grad_accum_dtype: the dtype the reduced gradients are stored and communicated in.
  // f32 (default), or the 16-bit model dtype: then each rank keeps 2 bytes per gradient (2 psi,
  // stage 2: 2 psi / N) as the ZeRO paper counts. The CPU backend still writes and accumulates the
  // micro-batch gradients in an f32 compute buffer (a workspace), rounded once per window.
  DType grad_dtype = DType::f32;
  // zero_optimization keys (DeepSpeed's meaning; counts in elements)
  int64_t reduce_bucket_size = 500'000'000;
  bool overlap_comm = false;       // reduce buckets during backward (true) or after it (false)
  bool reduce_scatter = true;      // stage 2: native reduce-scatter (false: all-reduce, keep own)
  bool allgather_partitions = true;  // all-gather (true) or one broadcast per rank (false)
  int64_t allgather_bucket_size = 500'000'000;
  // offload_optimizer (zero/offload.h): the fp32 master partition and Adam's m, v live in host
  // memory or an NVMe swap file, and Adam runs on them in sub_group_size pieces. Unset: off.
  std::optional<OffloadOptions> offload_optimizer;
  // offload_param device nvme (stage 3, zero/param_swap.h): this rank's weight partition lives in
  // a swap file under this folder, read piece by piece for the gathers. Empty: in memory.
  std::string offload_param_nvme_path;
  io::AioConfig param_aio;
  // Stage 3 (zero/stage3.h; DeepSpeed's stage3_* keys, in elements).
  int64_t stage3_prefetch_bucket_size = 50'000'000;
  int64_t stage3_max_live_parameters = 1'000'000'000;
  int64_t stage3_max_reuse_distance = 1'000'000'000;
  int64_t stage3_param_persistence_threshold = 100'000;
  int64_t stage3_model_persistence_threshold = INT64_MAX;
  // A checkpoint save waits this long for the other ranks to join before failing (a save called
  // on one rank only must not hang the job).
  double checkpoint_timeout_s = 120;
};

// Checkpoints (zero/checkpoint.cpp): DeepSpeed's save_checkpoint / load_checkpoint.
struct SaveOptions {
  bool save_latest = true;      // point `latest` at the new tag
  int keep = 0;                 // keep this many newest intact tags (0: all)
  std::string config_hash;      // stored in the manifest (io::content_hash of the config)
  // Asynchronous persistence (checkpoint.async, nebula_config; zero/checkpoint.cpp): the save
  // copies this rank's ranges into host memory and returns; a background thread with its own
  // communicator persists them with the same atomic protocol. Training waits only when the
  // previous persist is still running (SaveResult::previous.wait_ms).
  bool async = false;
  // Nebula's persistent_time_interval: an async save requested less than this many seconds after
  // the previous persist began (rank 0's clock, agreed by all ranks) is skipped, unless `force`
  // (the final save, a signal's save).
  double min_interval_s = 0;
  bool force = false;
  int writer_nice = 10;  // the background thread's lower CPU priority (0: same as training)
  // Test hook: called by the shard writer after each chunk (bytes written, shard size).
  std::function<void(uint64_t, uint64_t)> on_write_progress;
};
struct LoadOptions {
  bool load_optimizer_states = true;     // fp32 master, Adam's m and v, optimizer step
  bool load_lr_scheduler_states = true;  // the schedule's iteration
  bool load_module_only = false;         // weights only (fine-tuning from a checkpoint)
};
struct LoadResult {
  std::string tag;
  std::string client_state;  // the JSON text given to save_checkpoint
  std::string message;       // set when `latest` was missing or damaged and an older tag loaded
  int saved_world_size = 0, saved_stage = 0;
};
// A background persist collected by wait_checkpoint() (or by the next save). tag empty: none was
// pending.
struct CheckpointWait {
  std::string tag;
  double wait_ms = 0;     // how long the caller blocked for it (0 when it had already finished)
  double persist_ms = 0;  // how long the persist ran (begin_save to the last agreement)
  uint64_t bytes = 0;     // rank 0: bytes of the tag; other ranks: their shard
};
struct SaveResult {
  enum class Mode { sync, async, skipped };
  std::string tag;
  Mode mode = Mode::sync;
  double snapshot_ms = 0;  // async: copying this rank's ranges into host memory
  double blocked_ms = 0;   // how long save_checkpoint held training (wait + snapshot, or the save)
  CheckpointWait previous;  // the previous background persist, collected by this save
  std::string message;      // skipped: why; or a note (async fell back to synchronous)
};

// Where a step's time went (wall_clock_breakdown), in milliseconds, summed since the last
// take_timings(). comm_busy: time the communicator's thread spent in collectives (overlapped with
// compute or not); reduce_wait: time step() blocked waiting for gradient reductions.
struct Timings {
  double forward = 0, backward = 0, reduce_wait = 0, step = 0, allgather = 0, comm_busy = 0;
  int64_t windows = 0;
};

class Engine : private nn::BlockHooks {
 public:
  Engine(nn::GPT& model, EngineSettings settings, comm::Communicator* comm = nullptr);
  ~Engine() override;

  float forward(const Tensor& ids, const Tensor& targets);  // returns the (unscaled) loss
  // A forward for evaluation or sampling (no backward follows; not counted in the timings). At
  // stage 3 it gathers each unit as training does; model().logits() holds the result.
  float evaluate(const Tensor& ids, const Tensor& targets);
  void backward();  // gradients of loss / gradient_accumulation_steps, accumulated
  bool step();      // true when this micro-step closed a window and updated the weights

  // Saves the whole training state under <dir>/<tag> (tag "" = "global_step<N>"), every rank
  // writing its own shard in parallel; visible only once complete (io/checkpoint_store.h).
  // Collective: every rank must call it. client_state_json: the caller's own state (data position).
  SaveResult save_checkpoint(const std::string& dir, const std::string& tag = "",
                             const std::string& client_state_json = "{}",
                             const SaveOptions& opts = {});
  // Blocks until the background persist (SaveOptions::async) is durable and published; rethrows
  // its CheckpointError. Collective when one is pending (all ranks started it). Call before exit.
  CheckpointWait wait_checkpoint();
  bool checkpoint_persisting() const;  // a background persist is running
  // Loads <dir>/<tag> (tag "" = latest, falling back to the newest intact tag). Works across world
  // sizes and ZeRO stages: the checkpoint stores each rank's contiguous range of the flat buffers
  // and every rank reads the ranges it now owns. Collective.
  LoadResult load_checkpoint(const std::string& dir, const std::string& tag = "",
                             const LoadOptions& opts = {});

  // Timeline: compute spans (forward, each unit's backward, step) and communication spans (each
  // collective, from the comm thread) go to `trace` (nullptr: off).
  void set_trace(io::TraceRecorder* trace) { trace_ = trace; }
  Timings take_timings();

  nn::GPT& model() { return model_; }
  // The engine as the model's hooks, for code that drives the units itself (and for tests of the
  // stage-3 order check). nn::GPT's forward/backward through the engine call them already.
  nn::BlockHooks& hooks() { return *this; }
  const EngineSettings& settings() const { return s_; }
  const Partition& partition() const { return part_; }
  int rank() const { return part_.rank; }
  int world() const { return part_.world; }
  int64_t global_step() const { return global_step_; }  // windows closed (skipped ones too)
  int64_t micro_step() const { return micro_step_; }
  double lr() const { return last_lr_; }
  double grad_norm() const { return last_grad_norm_; }  // before clipping, of the last update
  double loss_scale() const { return scaler_.scale(); }
  const precision::LossScaler& loss_scaler() const { return scaler_; }
  bool last_step_skipped() const { return last_skipped_; }
  int64_t skipped_steps() const { return scaler_.skipped_steps(); }
  int64_t lr_iteration() const { return lr_iteration_; }  // updates applied (skips excluded)
  bool mixed() const { return s_.model_dtype != DType::f32; }
  const Device& device() const { return s_.device; }
  bool on_device() const { return s_.device.is_cuda(); }
  // On a GPU: Adam/AdamW step there (step_tensors); any other optimizer on the host (file comment).
  bool device_optimizer() const {
    return on_device() && s_.optimizer_kind == optim::OptimizerKind::adam;
  }
  bool host_optimizer() const { return on_device() && !device_optimizer(); }
  bool grads16() const { return s_.grad_dtype != DType::f32; }
  // The model's weights in the model dtype: the whole padded flat buffer at stages 0-2, this
  // rank's partition only at stage 3 (element i is flat element partition().begin() + i).
  // (With offload_param nvme the partition is read from the swap file into a new tensor.)
  Tensor model_params() const;
  bool partitioned_params() const { return s_.zero_stage == 3; }
  const OptimizerOffload* offload() const { return offload_.get(); }
  const ParamCoordinator* coordinator() const { return coord_.get(); }
  int64_t num_parameters() const { return part_.numel; }  // unpadded
  const Tensor& flat_params() const { return params_; }  // padded length
  const Tensor& flat_grads() const { return grads_; }
  optim::Optimizer& optimizer() { return *optimizer_; }
  // DeepSpeed's `exp_avg_mask` for the 1-bit optimizers (optim/optimizer.h), per parameter: `mask`
  // (a host f32 tensor of the parameter's shape, 0 where the gradient is always exactly zero)
  // multiplies that parameter's momentum after each compressed all-reduce; the other parameters
  // are unmasked. Call it after construction, on every rank alike; again to change a mask.
  // Throws naming the parameter (unknown name, wrong shape) or the optimizer (not OneBitAdam or
  // OneBitLamb).
  void set_exp_avg_mask(const std::string& param_name, const Tensor& mask);
  const BucketPlan& buckets() const { return buckets_; }

  // Bytes of model state this rank holds (ZeRO paper's accounting), and what the paper's formula
  // gives for this stage and world size: fp32 training 4 + 4 + 8 bytes per parameter (K = 8: m
  // and v, the parameters being their own master copy); mixed precision 2 + 2 + 12 (K = 12: fp32
  // master, m, v). Stage 1 divides the optimizer term by N, stage 2 also the gradient term.
  struct MemoryBytes {
    int64_t params = 0, grads = 0, optimizer = 0;
    // Not model state: the f32 compute copy of 16-bit weights; at stage 3 the peak of the
    // coordinator's pool (gathered units and unit gradients in flight).
    int64_t workspace = 0;
    // On a GPU, what the engine keeps in host memory for the host-side optimizer step: the fp32
    // master of the range (fp32 training: a copy of the weights) and the gradient staging buffer.
    int64_t host_staging = 0;
    int64_t nvme = 0;  // offload_optimizer device nvme: the swap file (optimizer: its buffers)
    int64_t total() const { return params + grads + optimizer; }
  };
  MemoryBytes model_state_bytes() const;
  MemoryBytes model_state_formula() const;

 private:
  void before_forward(int unit) override;    // BlockHooks: stage 3 gathers the unit
  void after_forward(int unit) override;     // stage 3 releases it
  void before_recompute(int unit) override;  // activation checkpointing under stage 3
  void after_recompute(int unit) override;
  void before_backward(int unit) override;  // BlockHooks: timeline; stage 3 gathers the unit
  void after_backward(int unit) override;  // BlockHooks: launch the buckets this unit completed
  void init_stage3(const std::vector<std::pair<int64_t, int64_t>>& ranges);
  void zero_grads();
  void add_optimizer_bytes(MemoryBytes& m) const;
  void launch_bucket(const Bucket& b);
  void gather_parameters();

  Tensor own_grads();  // the reduced gradient of this rank's partition
  // ---- device plumbing (zero/engine_device.cpp): no-ops or plain CPU code on the CPU
  void init_device();                         // binds the GPU; checks what runs there
  const Tensor& to_device(const Tensor& t, Tensor& buffer);  // a batch tensor on the device
  void round_into(const Tensor& f32, Tensor& dst) const;     // f32 -> model dtype (or f32 copy)
  void widen_into(const Tensor& src, Tensor& f32) const;     // model dtype -> f32
  bool nonfinite(const Tensor& g) const;                     // any inf/NaN
  void sync_device() const;  // the device's queued work done (before the host or a comm reads)
  Tensor control(std::vector<float> v) const;  // a tiny tensor for control reductions
  std::vector<float> read_control(const Tensor& t) const;
  // Checkpoints on a GPU: host copies of the weights replace the device buffers for the call.
  struct HostSwap;
  friend struct HostSwap;
  bool any_rank(bool flag);  // true when `flag` is true on some rank (one small all-reduce)
  double global_sum(double v);  // sum over ranks at stage >= 1 (partitions), local at stage 0

  nn::GPT& model_;
  EngineSettings s_;
  comm::Communicator* comm_;
  Partition part_;
  BucketPlan buckets_;
  Tensor params_, grads_;   // flat fp32, padded: every parameter/gradient is a view into these
  Tensor params16_;         // mixed precision: the model's weights in model_dtype (padded)
  Tensor part_params_;      // stage 3: this rank's partition of the weights, in model_dtype
  std::unique_ptr<ParamSwap> pswap_;          // stage 3, offload_param nvme
  std::unique_ptr<ParamCoordinator> coord_;  // stage 3
  Tensor master_;           // mixed precision (and on a GPU): fp32 master of the optimizer's range
  Tensor host_grads_;       // on a GPU: host copy of the own gradient range for the optimizer
  Tensor ids_dev_, tgt_dev_;  // on a GPU: the micro-batch's ids and targets
  std::shared_ptr<void> device_scope_;  // on a GPU: keeps the engine's device current
  std::unique_ptr<precision::GradChecker> grad_check_;  // on a GPU: overflow + norm, one read
  Tensor part_grads_;       // stage 2: this rank's reduced gradient partition (grad_dtype)
  std::vector<float> exp_avg_mask_;  // set_exp_avg_mask: over the optimizer's span (stage 0)
  Tensor grads16_;          // 16-bit grad_dtype, stages 0/1: the reduced gradients (padded)
  Tensor grad_scratch_;     // 16-bit grad_dtype: f32 copy of the own range for the optimizer
  std::vector<Tensor> staging_;  // 16-bit grad_dtype, stage 2: ring of bucket buffers
  std::vector<std::shared_ptr<comm::Work>> staging_work_;
  size_t next_slot_ = 0;
  Tensor gather_staging_;   // chunked all-gather when allgather_bucket_size < partition
  std::vector<optim::Segment> segments_;  // weight-decay runs of this rank's partition
  std::unique_ptr<optim::Optimizer> optimizer_;  // with offload: a facade over offload_
  std::unique_ptr<OptimizerOffload> offload_;   // offload_optimizer
  std::vector<std::shared_ptr<comm::Work>> pending_;  // launched reductions
  std::unique_ptr<comm::Communicator> ckpt_comm_;
  // Asynchronous checkpoints (zero/checkpoint.cpp): the background job, its own communicator and
  // the reused snapshot; created at the first async save. Owns nothing of the engine's.
  std::shared_ptr<AsyncCheckpointState> async_ckpt_;
  bool boundary_ = false;   // the current backward closes an accumulation window
  bool launch_in_hooks_ = false;  // overlap_comm: buckets launch from after_backward
  io::TraceRecorder* trace_ = nullptr;
  std::chrono::steady_clock::time_point unit_begin_;
  Timings timings_;
  std::atomic<int64_t> comm_busy_ns_{0};
  int64_t launched_ = 0;    // buckets launched in this backward
  precision::LossScaler scaler_ = precision::LossScaler::none();
  bool last_skipped_ = false;
  int64_t micro_step_ = 0, global_step_ = 0, lr_iteration_ = 0;
  double last_lr_ = 0.0, last_grad_norm_ = 0.0;
};

}  // namespace zt::zero
