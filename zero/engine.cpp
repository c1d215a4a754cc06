// zero/engine.cpp: flat buffers and partitions, the accumulation window and the bucketed gradient
// reduction during backward (stages 0-2), and the device plumbing of a GPU engine (the end of the
// file). The step (overflow, norm, clipping, update, gather) is in zero/engine_step.cpp.
#include "zero/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "comm/communicator.h"
#include "core/cuda/device.h"
#include "core/cuda/stream.h"
#include "core/ops.h"
#include "precision/convert.h"
#include "precision/overflow.h"

namespace zt::zero {

Engine::Engine(nn::GPT& model, EngineSettings settings, comm::Communicator* comm)
    : model_(model), s_(std::move(settings)), comm_(comm) {
  ZT_CHECK(s_.scheduler, "Engine: no learning-rate schedule given");
  ZT_CHECK(s_.gradient_accumulation_steps >= 1, "Engine: gradient_accumulation_steps must be >= 1");
  ZT_CHECK(s_.zero_stage >= 0 && s_.zero_stage <= 3, "Engine: ZeRO stage ", s_.zero_stage,
           " does not exist (stages are 0, 1, 2 and 3)");
  int world = comm_ ? comm_->world() : 1, rank = comm_ ? comm_->rank() : 0;
  init_device();  // a GPU engine: its device is current from here on
  const Device dev = s_.device;

  // One flat buffer for all parameters and one for all gradients, in the model's canonical order,
  // padded to equal partitions (zero/partition.h).
  std::vector<nn::Parameter*> ps = model_.parameters();
  int64_t n = 0;
  for (nn::Parameter* p : ps) n += p->value.numel();
  part_ = Partition::make(n, world, rank);
  params_ = Tensor::zeros({part_.padded}, DType::f32, dev);
  grads_ = Tensor::zeros({part_.padded}, DType::f32, dev);
  // Weight-decay runs over the whole flat buffer. Lamb needs one run per tensor (its trust ratio is
  // per tensor, identified across ranks by the tensor's index), and so do the 1-bit optimizers
  // (one compression scale per tensor, as DeepSpeed); Adam gets merged runs (fewer, longer loops
  // that split across threads).
  const bool per_tensor = optim::per_tensor_segments(s_.optimizer_kind);
  std::vector<optim::Segment> all_segments;
  int64_t off = 0, index = 0;
  for (nn::Parameter* p : ps) {
    int64_t k = p->value.numel();
    p->rebind(params_.flat_view(off, p->value.shape()), grads_.flat_view(off, p->value.shape()));
    p->flat_offset = off;
    if (!per_tensor && !all_segments.empty() && all_segments.back().decay == p->decay)
      all_segments.back().size += k;
    else
      all_segments.push_back({off, k, p->decay, per_tensor ? index : -1});
    off += k;
    ++index;
  }
  // Every rank starts from rank 0's weights, whatever each initialised.
  if (comm_ && world > 1) comm_->broadcast(params_, 0)->wait();
  // Checkpoints get their own communicator (collective to create, so here, not in a save): their
  // collectives never interleave with training's, and their waits time out.
  if (comm_ && world > 1) {
    comm::CommOptions o;
    o.timeout_s = s_.checkpoint_timeout_s;
    ckpt_comm_ = comm::make_mpi_communicator(o);
    // Every collective's interval: the breakdown's comm time and the timeline's comm track.
    comm_->set_observer([this](const char* op, int64_t bytes, std::chrono::steady_clock::time_point a,
                               std::chrono::steady_clock::time_point b) {
      comm_busy_ns_ += std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
      if (trace_) trace_->span(io::TraceTrack::kCommunication, op, a, b, {{"bytes", double(bytes)}});
    });
  }

  // The optimizer covers the whole buffer at stage 0 and this rank's partition from stage 1 on.
  const int64_t lo = s_.zero_stage == 0 ? 0 : part_.begin();
  const int64_t hi = s_.zero_stage == 0 ? part_.padded : part_.end();
  for (const optim::Segment& sg : all_segments) {
    int64_t a = std::max(lo, sg.offset), b = std::min(hi, sg.offset + sg.size);
    if (a < b) segments_.push_back({a - lo, b - a, sg.decay, sg.tensor});
  }
  if (s_.offload_optimizer) {
    // ZeRO-Offload: DeepSpeedCPUAdam's job. The state is created below, once the fp32 weights of
    // the range are final; optimizer_ becomes a facade (name, step count, betas) over it.
    ZT_CHECK(s_.optimizer_kind == optim::OptimizerKind::adam, "Engine: offload_optimizer runs ",
             "Adam/AdamW on the CPU (as DeepSpeed's DeepSpeedCPUAdam); the configured optimizer is ",
             "not supported with it");
    ZT_CHECK(s_.zero_stage >= 1, "Engine: offload_optimizer needs ZeRO stage 1, 2 or 3 (it offloads ",
             "this rank's partition of the optimizer state), got stage 0");
    OffloadOptions oo = *s_.offload_optimizer;
    oo.rank = part_.rank;
    if (oo.sub_group_size == 0) {  // one sub-group per parameter: cut where tensors begin
      for (const nn::Parameter* p : ps)
        if (p->flat_offset > lo && p->flat_offset < hi) oo.param_starts.push_back(p->flat_offset - lo);
    }
    offload_ = std::make_unique<OptimizerOffload>(s_.adam, hi - lo, oo);
    optimizer_ = make_offload_facade(*offload_);
  } else {
    optimizer_ = optim::make_optimizer({s_.optimizer_kind, s_.adam, s_.lamb, s_.onebit});
    optimizer_->init(hi - lo);
  }
  // 1-bit family: compresses its own communication (backward() asks reduces_own_gradients()).
  ZT_CHECK(!optim::is_onebit(s_.optimizer_kind) || s_.zero_stage == 0, "Engine: ",
           optimizer_->name(), " supports ZeRO stage 0 only, got stage ", s_.zero_stage);
  optimizer_->set_communicator(comm_);
  if (optimizer_->uses_tensor_stats()) {
    // Lamb's per-tensor sums of squares: a tensor split across partitions needs the sum over the
    // ranks that hold its pieces (stage 0 holds whole tensors). The communicator reduces f32, so
    // the sums travel as f32 (about 1e-7 relative in the trust ratio).
    const bool reduce = comm_ && world > 1 && s_.zero_stage > 0;
    optimizer_->set_tensor_stats(index, [this, reduce](double* v, int64_t n) {
      if (!reduce) return;
      std::vector<float> f(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) f[i] = static_cast<float>(v[i]);
      Tensor t = control(std::move(f));
      comm_->all_reduce(t, comm::ReduceOp::sum)->wait();
      const std::vector<float> r = read_control(t);
      for (int64_t i = 0; i < n; ++i) v[i] = r[i];
    });
  }
  if (mixed()) {
    ZT_CHECK(s_.model_dtype == DType::f16 || s_.model_dtype == DType::bf16,
             "Engine: model dtype must be f32, f16 or bf16, got ", dtype_name(s_.model_dtype));
    // The model's weights are the 16-bit ones; compute copy and fp32 master start from them.
    params16_ = Tensor::empty({part_.padded}, s_.model_dtype, dev);
    round_into(params_, params16_);
    widen_into(params16_, params_);
    if (!offload_ && !host_optimizer()) master_ = params_.flat_view(lo, {hi - lo}).clone();
    if (s_.model_dtype == DType::f16) scaler_ = precision::LossScaler(s_.loss_scaler);
  }
  if (grads16()) {
    ZT_CHECK(mixed() && s_.grad_dtype == s_.model_dtype, "Engine: gradients in ",
             dtype_name(s_.grad_dtype), " need ", dtype_name(s_.grad_dtype), " model weights");
    ZT_CHECK(s_.zero_stage < 2 || s_.reduce_scatter, "Engine: 16-bit gradients at stage 2 need ",
             "reduce_scatter: true");
    if (s_.zero_stage < 2) grads16_ = Tensor::zeros({part_.padded}, s_.grad_dtype, dev);
    grad_scratch_ = Tensor::zeros({hi - lo}, DType::f32, dev);
  }
  if (host_optimizer()) {
    // The optimizer steps a host fp32 master of the range (the weights' own values in fp32
    // training, already rounded to the model dtype in mixed precision) from a host copy of the
    // gradient range (file comment of engine.h).
    master_ = Tensor::empty({hi - lo});
    ops::copy(params_.flat_view(lo, {hi - lo}), master_);
    host_grads_ = Tensor::empty({hi - lo});
  }
  // The offloaded master weights start from the (16-bit rounded, when mixed) weights of the range.
  if (offload_) offload_->write_state("master", 0, hi - lo, params_.data<float>() + lo);
  if (s_.zero_stage == 2 && (world > 1 || grads16()))
    part_grads_ = Tensor::zeros({part_.size}, s_.grad_dtype, dev);

  // Buckets follow the units' flat ranges (units are contiguous in canonical order).
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t pos = 0;
  for (int u = 0; u < model_.num_units(); ++u) {
    int64_t len = 0;
    for (nn::Parameter* p : model_.unit_parameters(u)) {
      ZT_ASSERT(p->value.offset() == pos + len, "unit ", u, " parameter ", p->name,
                " is not contiguous with its unit");
      len += p->value.numel();
    }
    ranges.push_back({pos, pos + len});
    pos += len;
  }
  ranges.back().second = part_.padded;
  // Stage 3 reduces each unit's gradient as one collective right after its backward (no buckets).
  if (s_.zero_stage == 3) init_stage3(ranges);
  else buckets_ = plan_buckets(ranges, s_.reduce_bucket_size);
  last_lr_ = s_.scheduler->lr_at(0);
}

// Stage 3: keep this rank's partition of the weights (and the gradient partition), hand the
// units to the coordinator, and let go of the whole-model buffers. (The full buffers exist during
// construction only, to start every rank from rank 0's weights; DeepSpeed's zero.Init avoids even
// that by partitioning as the model is built.)
void Engine::init_stage3(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  const Tensor& full = mixed() ? params16_ : params_;
  part_params_ = full.flat_view(part_.begin(), {part_.size}).clone();
  part_grads_ = Tensor::zeros({part_.size}, s_.grad_dtype);
  const int L = model_.num_units() - 2;
  std::vector<Stage3Unit> units(ranges.size());
  for (int u = 0; u < model_.num_units(); ++u) {
    Stage3Unit& su = units[u];
    su.name = u == 0 ? "embeddings" : u == L + 1 ? "head" : "block " + std::to_string(u - 1);
    su.lo = ranges[u].first;
    su.hi = ranges[u].second;
    for (nn::Parameter* p : model_.unit_parameters(u)) {
      su.params.push_back(p);
      su.offsets.push_back(p->value.offset());
      su.shapes.push_back(p->value.shape());
    }
  }
  // The tied head reads the token embedding (unit 0's weight) in forward and adds to its gradient
  // in backward.
  if (model_.config().tie_weights) units[L + 1].also.push_back(0);
  Stage3Options o;
  o.prefetch_bucket_size = s_.stage3_prefetch_bucket_size;
  o.max_live_parameters = s_.stage3_max_live_parameters;
  o.max_reuse_distance = s_.stage3_max_reuse_distance;
  o.param_persistence_threshold = s_.stage3_param_persistence_threshold;
  o.model_persistence_threshold = s_.stage3_model_persistence_threshold;
  o.overlap_comm = s_.overlap_comm;
  o.model_dtype = s_.model_dtype;
  o.grad_dtype = s_.grad_dtype;
  std::unique_ptr<comm::Communicator> check;
  if (comm_ && part_.world > 1) {
    // The order check runs on a communicator (and thread) of its own: it never queues behind the
    // gradient reductions on comm_, and the caller waits for it only when it must (stage3.cpp).
    check = comm::make_mpi_communicator(comm_->options());
  }
  if (!s_.offload_param_nvme_path.empty()) {  // ZeRO-Infinity: the partition goes to the drive
    pswap_ = std::make_unique<ParamSwap>(s_.offload_param_nvme_path, part_.rank, part_.size,
                                         part_params_.dtype(), s_.param_aio);
    pswap_->write(0, part_.size, part_params_.raw());
  }
  coord_ = std::make_unique<ParamCoordinator>(std::move(units), part_, part_params_, part_grads_,
                                              comm_, std::move(check), o, pswap_.get());
  if (pswap_) part_params_ = Tensor();
  params_ = Tensor();
  grads_ = Tensor();
  params16_ = Tensor();
}

void Engine::set_exp_avg_mask(const std::string& param_name, const Tensor& mask) {
  const nn::Parameter* param = nullptr;
  for (const nn::Parameter* p : model_.parameters())
    if (p->name == param_name) param = p;
  ZT_CHECK(param != nullptr, "Engine::set_exp_avg_mask: the model has no parameter `", param_name,
           "`");
  ZT_CHECK(mask.device().is_cpu() && mask.dtype() == DType::f32 && mask.shape() == param->shape,
           "Engine::set_exp_avg_mask(", param_name, "): the mask must be a host f32 tensor of the "
           "parameter's shape ", shape_str(param->shape), ", got ", mask.str());
  // The optimizer's span: the whole flat buffer at stage 0, this rank's partition from stage 1.
  const int64_t lo = s_.zero_stage == 0 ? 0 : part_.begin();
  const int64_t hi = s_.zero_stage == 0 ? part_.padded : part_.end();
  if (exp_avg_mask_.empty()) exp_avg_mask_.assign(static_cast<size_t>(hi - lo), 1.f);
  const std::vector<float> src = mask.to_vector();
  for (int64_t i = 0; i < param->numel(); ++i) {
    const int64_t at = param->flat_offset + i;
    if (at >= lo && at < hi) exp_avg_mask_[static_cast<size_t>(at - lo)] = src[static_cast<size_t>(i)];
  }
  optimizer_->set_exp_avg_mask(exp_avg_mask_);
}

Tensor Engine::model_params() const {
  if (s_.zero_stage != 3) return mixed() ? params16_ : params_;
  if (!pswap_ || part_params_.defined()) return part_params_;
  Tensor t = Tensor::empty({part_.size}, s_.model_dtype);
  pswap_->read(0, part_.size, t.raw());
  return t;
}

void Engine::zero_grads() {
  if (grads_.defined()) ops::fill(grads_, 0.f);
  if (s_.zero_stage == 3) ops::fill(part_grads_, 0.f);
}

Engine::~Engine() {
  // Reductions still in flight write into our buffers: let them finish first.
  for (auto& w : pending_) w->wait();
  if (comm_) comm_->set_observer(nullptr);
}

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

Timings Engine::take_timings() {
  Timings t = timings_;
  t.comm_busy = static_cast<double>(comm_busy_ns_.exchange(0)) / 1e6;
  timings_ = Timings{};
  return t;
}

float Engine::forward(const Tensor& ids, const Tensor& targets) {
  auto t0 = std::chrono::steady_clock::now();
  if (coord_) coord_->begin_forward();
  // (On a GPU the loss comes back with the forward: cross_entropy_forward synchronises.)
  float loss = model_.forward(to_device(ids, ids_dev_), to_device(targets, tgt_dev_),
                              coord_ ? this : nullptr);
  timings_.forward += ms_since(t0);
  if (trace_) trace_->span(io::TraceTrack::kCompute, "forward", t0, std::chrono::steady_clock::now());
  return loss;
}

float Engine::evaluate(const Tensor& ids, const Tensor& targets) {
  if (coord_) coord_->begin_forward();
  return model_.forward(to_device(ids, ids_dev_), to_device(targets, tgt_dev_),
                        coord_ ? this : nullptr);
}

void Engine::backward() {
  auto t0 = std::chrono::steady_clock::now();
  boundary_ = (micro_step_ + 1) % s_.gradient_accumulation_steps == 0;
  launched_ = 0;
  // Stage 3 reduces every micro-batch, unit by unit, from the hooks (zero/stage3.h).
  bool reduce = boundary_ && comm_ && part_.world > 1 && !coord_;
  // 1-bit optimizers after their warm-up take the local gradient and communicate themselves.
  reduce = reduce && !optimizer_->reduces_own_gradients();
  launch_in_hooks_ = reduce && s_.overlap_comm;
  // DeepSpeed divides the loss by the accumulation steps, so the window's gradient is the mean; with
  // fp16 the loss scale multiplies in here (the gradients stay scaled until the step).
  const float dloss =
      static_cast<float>(scaler_.scale() / static_cast<double>(s_.gradient_accumulation_steps));
  model_.backward(dloss, launch_in_hooks_ || trace_ || coord_ ? this : nullptr);
  if (coord_) coord_->end_backward();
  // A GPU runs behind the host: wait here, so that the breakdown's backward is the device's time
  // (the buckets launched next would wait for it anyway).
  sync_device();
  if (reduce) {
    // Without overlap, every bucket goes after backward; with it, the hooks launched them.
    for (int64_t i = launched_; i < static_cast<int64_t>(buckets_.buckets.size()); ++i)
      launch_bucket(buckets_.buckets[i]);
    launched_ = static_cast<int64_t>(buckets_.buckets.size());
  }
  timings_.backward += ms_since(t0);
}

void Engine::before_forward(int unit) {
  if (coord_) coord_->acquire(unit, Stage3Phase::forward);
}
void Engine::after_forward(int unit) {
  if (coord_) coord_->release(unit, Stage3Phase::forward);
}
void Engine::before_recompute(int unit) {
  if (coord_) coord_->acquire(unit, Stage3Phase::recompute);
}
void Engine::after_recompute(int unit) {
  if (coord_) coord_->release(unit, Stage3Phase::recompute);
}

void Engine::before_backward(int unit) {
  if (coord_) coord_->acquire(unit, Stage3Phase::backward);
  unit_begin_ = std::chrono::steady_clock::now();
}

void Engine::after_backward(int unit) {
  if (trace_)
    trace_->span(io::TraceTrack::kCompute, "backward unit " + std::to_string(unit), unit_begin_,
                 std::chrono::steady_clock::now());
  if (coord_) {
    coord_->release(unit, Stage3Phase::backward);
    return;
  }
  if (!launch_in_hooks_) return;
  // Buckets are in launch order; launch every one whose ready unit has now finished.
  while (launched_ < static_cast<int64_t>(buckets_.buckets.size()) &&
         buckets_.buckets[launched_].ready_unit >= unit)
    launch_bucket(buckets_.buckets[launched_++]);
}

void Engine::launch_bucket(const Bucket& b) {
  const int64_t len = b.hi - b.lo;
  Tensor g = grads_.flat_view(b.lo, {len});
  if (grads16()) {
    // Round the window's f32 gradient to grad_dtype once, then reduce 16-bit buffers (the
    // communicator sums them in f32 and rounds once more).
    if (s_.zero_stage < 2) {
      Tensor g16 = grads16_.flat_view(b.lo, {len});
      round_into(g, g16);
      pending_.push_back(comm_->all_reduce(g16, comm::ReduceOp::avg));
      return;
    }
    // Stage 2: a ring of two bucket buffers; a slot is reused once its reduction has finished.
    if (staging_.empty()) {
      int64_t cap = 0;
      for (const Bucket& x : buckets_.buckets) cap = std::max(cap, x.hi - x.lo);
      for (int i = 0; i < 2; ++i)
        staging_.push_back(Tensor::empty({cap}, s_.grad_dtype, s_.device));
      staging_work_.resize(2);
    }
    size_t slot = next_slot_++ % staging_.size();
    if (staging_work_[slot]) staging_work_[slot]->wait();
    Tensor g16 = staging_[slot].flat_view(0, {len});
    round_into(g, g16);
    g = g16;
  }
  if (s_.zero_stage < 2 || !s_.reduce_scatter) {
    // Stages 0/1 (and stage 2 with reduce_scatter: false, DeepSpeed's way): all-reduce the bucket;
    // stage 2 then keeps its own part (own_grads()).
    pending_.push_back(comm_->all_reduce(g, comm::ReduceOp::avg));
    return;
  }
  // Stage 2: each rank receives the averaged gradient of the part of [lo, hi) it owns.
  std::vector<int64_t> counts(part_.world);
  for (int r = 0; r < part_.world; ++r)
    counts[r] = std::max<int64_t>(0, part_.owner_hi(r, b.hi) - part_.owner_lo(r, b.lo));
  int64_t a = part_.owner_lo(part_.rank, b.lo);
  Tensor out = part_grads_.flat_view(std::min(a, part_.end()) - part_.begin(),
                                     {counts[part_.rank]});
  pending_.push_back(comm_->reduce_scatter_v(g, out, counts, comm::ReduceOp::avg));
  if (grads16()) staging_work_[(next_slot_ - 1) % staging_.size()] = pending_.back();
}

// ---- the device ---------------------------------------------------------------------------------
// A GPU engine differs from the CPU one only in where its buffers live and in these helpers; on the
// CPU each one is the code the engine ran before it had a device (same calls, same bits).
// Collectives need no synchronisation here: both backends order an op after the work already
// enqueued on the caller's current stream (an event recorded at issue; comm/communicator.h), so a
// bucket launched from the backward hooks overlaps the rest of the backward on the GPU too.

void Engine::init_device() {
  if (!on_device()) return;
  const std::string dev = s_.device.str();
  ZT_CHECK(s_.zero_stage <= 2, "Engine on ", dev, ": ZeRO stage 3 is not yet on CUDA (stages 0, ",
           "1 and 2 are); use device: cpu for stage 3");
  ZT_CHECK(!s_.offload_optimizer, "Engine on ", dev, ": offload_optimizer is not yet on CUDA; ",
           "use device: cpu to offload");
  ZT_CHECK(s_.offload_param_nvme_path.empty(), "Engine on ", dev, ": offload_param is not yet ",
           "on CUDA; use device: cpu");
  const int n = cuda::device_count();
  ZT_CHECK(s_.device.index >= 0 && s_.device.index < n, "Engine on ", dev, ": ",
           n == 0 ? cuda::device_summary() : detail::str_cat(n, " GPU(s) visible"));
  // Kernels run on the calling thread's current device: make ours current for the engine's life
  // (the trainer has set it once for the process already; core/cuda has no set_device of its own).
  device_scope_ = std::make_shared<cuda::StreamGuard>(
      cuda::Stream::wrap(cuda::current_stream(), s_.device.index));
  grad_check_ = std::make_unique<precision::GradChecker>(s_.device);
}

const Tensor& Engine::to_device(const Tensor& t, Tensor& buffer) {
  if (!on_device() || t.device() == s_.device) return t;
  if (!buffer.defined() || buffer.shape() != t.shape() || buffer.dtype() != t.dtype())
    buffer = Tensor::empty(t.shape(), t.dtype(), s_.device);
  ops::copy(t, buffer);
  return buffer;
}

void Engine::round_into(const Tensor& f32, Tensor& dst) const {
  // ops::copy is the cast op of both backends; on the host the engine keeps the vectorized
  // conversions of precision/ (identical bits: both round to nearest even as core/dtype.h).
  if (f32.device().is_cuda() || dst.device().is_cuda()) return ops::copy(f32, dst);
  precision::copy_master_to_model(f32, dst);
}

void Engine::widen_into(const Tensor& src, Tensor& f32) const {
  if (src.device().is_cuda() || f32.device().is_cuda()) return ops::copy(src, f32);
  precision::widen_to_f32(src, f32);
}

bool Engine::nonfinite(const Tensor& g) const {
  if (g.device().is_cuda()) return !ops::all_finite(g);
  return precision::has_inf_or_nan(g);
}

void Engine::sync_device() const {
  if (on_device()) cuda::Stream::wrap(cuda::current_stream(), s_.device.index).synchronize();
}

Tensor Engine::control(std::vector<float> v) const {
  const int64_t n = static_cast<int64_t>(v.size());
  Tensor t = Tensor::from_vector(v, {n});
  // nccl reduces device memory only; the mpi backend takes these from the host as always.
  if (!on_device() || !comm_ || comm_->backend() != "nccl") return t;
  Tensor d = Tensor::empty({n}, DType::f32, s_.device);
  ops::copy(t, d);
  return d;
}

std::vector<float> Engine::read_control(const Tensor& t) const {
  if (t.device().is_cpu()) return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
  Tensor h = Tensor::empty(t.shape());
  ops::copy(t, h);
  return h.to_vector();
}

}  // namespace zt::zero
