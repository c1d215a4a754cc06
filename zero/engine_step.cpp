// zero/engine_step.cpp: the end of an accumulation window: wait for the reductions, overflow
// check agreed by all ranks (skip and lower the loss scale on overflow), global gradient norm from
// the partitions, unscale and clip in one multiply, the optimizer on this rank's partition, the
// cast to 16-bit model weights, the parameter all-gather and the learning-rate schedule.
#include <chrono>
#include <cmath>
#include <optional>
#include <cstdio>
#include <cstring>

#include "comm/communicator.h"
#include "core/ops.h"
#include "precision/convert.h"
#include "precision/overflow.h"
#include "zero/diagnose.h"  // [faults] naming the first non-finite gradient
#include "zero/engine.h"

namespace zt::zero {

Tensor Engine::own_grads() {
  if (grads16()) {
    // The reduced 16-bit gradients of our range (one process: rounded here, as the reduction
    // would), widened into the f32 scratch the optimizer reads.
    const int64_t lo = s_.zero_stage == 0 ? 0 : part_.begin(), n = grad_scratch_.numel();
    Tensor g16 = s_.zero_stage < 2 ? grads16_.flat_view(lo, {n}) : part_grads_;
    // (Stage 3 has accumulated into the 16-bit partition already: zero/stage3.cpp.)
    if (s_.zero_stage < 3 && (!comm_ || part_.world == 1)) {
      Tensor own = grads_.flat_view(lo, {n});
      round_into(own, g16);
    }
    widen_into(g16, grad_scratch_);
    return grad_scratch_;
  }
  if (s_.zero_stage == 3) return part_grads_;  // reduced unit by unit (zero/stage3.cpp)
  if (s_.zero_stage == 0) return grads_;
  if (s_.zero_stage == 2 && part_.world > 1) {
    if (!s_.reduce_scatter) ops::copy(grads_.flat_view(part_.begin(), {part_.size}), part_grads_);
    return part_grads_;
  }
  return grads_.flat_view(part_.begin(), {part_.size});
}

bool Engine::any_rank(bool flag) {
  if (!comm_ || part_.world == 1) return flag;
  Tensor t = control({flag ? 1.f : 0.f});
  comm_->all_reduce(t, comm::ReduceOp::max)->wait();
  return read_control(t)[0] > 0.f;
}

double Engine::global_sum(double v) {
  // Stage 0 holds the whole reduced gradient on every rank: nothing to add.
  if (s_.zero_stage == 0 || !comm_ || part_.world == 1) return v;
  Tensor t = control({static_cast<float>(v)});
  comm_->all_reduce(t, comm::ReduceOp::sum)->wait();
  return read_control(t)[0];
}

bool Engine::step() {
  ++micro_step_;
  if (micro_step_ % s_.gradient_accumulation_steps != 0) return false;
  auto t_wait = std::chrono::steady_clock::now();
  for (auto& w : pending_) w->wait();
  pending_.clear();
  if (coord_) coord_->finish_reductions();
  timings_.reduce_wait += std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now() - t_wait).count();
  ++timings_.windows;
  auto t_step = std::chrono::steady_clock::now();
  Tensor g = own_grads();
  ++global_step_;

  // Overflow: inf/NaN anywhere in any rank's partition. Every rank must agree, or some would step
  // and all-gather while others skip (one small all-reduce of a flag). On a GPU the flag and the
  // sum of squares for the norm below come from one fused pass and one host read.
  std::optional<precision::GradCheck> check;
  if (grad_check_) {
    grad_check_->add(g);
    check = grad_check_->read();
  }
  bool overflow = any_rank(check ? check->overflow : nonfinite(g));
  last_skipped_ = false;
  if (overflow && !scaler_.dynamic() && scaler_.scale() == 1.0 && !s_.skip_nonfinite &&
      s_.model_dtype != DType::f16) {
    // [faults] zero/diagnose.h: name the first non-finite gradient (collective: all ranks are here)
    // (The scan gathers host tensors: over the checkpoint communicator, an mpi dup, when the
    // training one is nccl, which reduces device memory only.)
    comm::Communicator* over = part_.world == 1 ? nullptr
                               : comm_->backend() == "nccl" ? ckpt_comm_.get() : comm_;
    const std::string first =
        first_nonfinite_element(model_, g, s_.zero_stage == 0 ? 0 : part_.begin(), over);
    throw Error(detail::str_cat("step ", global_step_, ": the gradient holds inf or NaN (",
                                dtype_name(s_.model_dtype), " training has no loss scale): ",
                                "first non-finite gradient ", first,
                                "; lower optimizer.params.lr, set gradient_clipping, or set ",
                                "bf16.check_grad_overflow to skip such steps"));
  }
  if (s_.model_dtype == DType::f16 || overflow) {
    precision::ScaleUpdate u = scaler_.update(overflow);  // throws at min_loss_scale
    if (u.log && part_.rank == 0) std::fprintf(stderr, "zerotrain: %s\n", u.message().c_str());
    if (overflow) {
      // DeepSpeed: a skipped step moves neither the weights nor the learning-rate schedule.
      last_skipped_ = true;
      last_grad_norm_ = NAN;
      zero_grads();
      return true;
    }
  }

  // Global gradient norm of the (still scaled) gradients from the partitions, then unscale and
  // clip in one multiply (torch's clip_grad_norm_: max_norm / (norm + 1e-6) when below 1).
  const double scale = mixed() ? scaler_.scale() : 1.0;
  double scaled_norm = std::sqrt(global_sum(check ? check->sum_squares : ops::sum_squares(g)));
  precision::UnscaleClip uc = precision::unscale_and_clip(scaled_norm, scale, s_.gradient_clipping);
  last_grad_norm_ = uc.grad_norm;
  // (A device optimizer folds the multiply into its update pass: StepExtras::grad_scale.)
  if (uc.multiplier != 1.0 && !device_optimizer())
    ops::scale(g, static_cast<float>(uc.multiplier));

  last_lr_ = s_.scheduler->lr_at(lr_iteration_);
  if (std::optional<double> mom = s_.scheduler->momentum_at(lr_iteration_))  // OneCycle
    ZT_CHECK(optimizer_->set_betas(static_cast<float>(*mom), static_cast<float>(optim::kCycledBeta2)),
             "the schedule cycles momentum but optimizer ", optimizer_->name(), " has no betas");
  const int64_t lo = s_.zero_stage == 0 ? 0 : part_.begin();
  // Stage 3: fp32 weights are their own master, and the partition is all this rank has of them.
  // (With offload and mixed precision there is no f32 copy of the range here at all.)
  // offload_param nvme with fp32 weights and the optimizer in memory: the partition is read in for
  // the update and written back after it.
  Tensor wpart = pswap_ && !mixed() && !offload_ ? model_params() : part_params_;
  float* w = mixed() || host_optimizer() ? (offload_ ? nullptr : master_.data<float>())
             : coord_                    ? (wpart.defined() ? wpart.data<float>() : nullptr)
                                         : params_.data<float>() + lo;
  if (offload_) {
    // The offloaded step hands each updated sub-group of the fp32 master over as it finishes; it
    // is copied (rounded, when mixed) into the model's weights while the drive swaps the next.
    Tensor dst = coord_ ? part_params_ : mixed() ? params16_.flat_view(lo, {g.numel()}) : Tensor();
    Tensor sub16;  // offload_param nvme with 16-bit weights: one sub-group, rounded, to the drive
    offload_->step(g.data<float>(), segments_, static_cast<float>(last_lr_),
                   [&](int64_t off, int64_t cnt, const float* m) {
                     if (pswap_ && !mixed()) {
                       pswap_->write(off, cnt, m);
                     } else if (pswap_) {
                       if (sub16.numel() < cnt) sub16 = Tensor::empty({cnt}, s_.model_dtype);
                       precision::copy_master_to_model(m, sub16.raw(), s_.model_dtype, cnt);
                       pswap_->write(off, cnt, sub16.raw());
                     } else if (!mixed()) std::memcpy(w + off, m, static_cast<size_t>(cnt) * 4);
                     else precision::copy_master_to_model(m, static_cast<char*>(dst.raw()) +
                                                                 off * dtype_size(dst.dtype()),
                                                          dst.dtype(), cnt);
                   });
  } else if (device_optimizer()) {
    // One fused pass on the GPU: unscale/clip, Adam/AdamW on the fp32 weights of the range (the
    // master with mixed precision), and the rounded 16-bit weights.
    optim::StepExtras ex;
    ex.grad_scale = static_cast<float>(uc.multiplier);
    Tensor w32 = mixed() ? master_ : params_.flat_view(lo, {g.numel()});
    Tensor w16 = mixed() ? params16_.flat_view(lo, {g.numel()}) : Tensor();
    if (mixed()) ex.params16 = &w16;
    optimizer_->step_tensors(w32, g, segments_, static_cast<float>(last_lr_), ex);
  } else if (host_optimizer()) {
    // A GPU engine whose optimizer has no device kernel (Lamb, 1-bit): the gradient range comes
    // down, the host master is updated, and the weights go back up below.
    ops::copy(g, host_grads_);
    optimizer_->step(w, host_grads_.data<float>(), g.numel(), segments_,
                     static_cast<float>(last_lr_));
  } else {
    optimizer_->step(w, g.data<float>(), g.numel(), segments_, static_cast<float>(last_lr_));
  }
  ++lr_iteration_;
  zero_grads();
  if (mixed() && !offload_ && !device_optimizer()) {  // round the master into the 16-bit weights
    Tensor dst = pswap_   ? Tensor::empty({part_.size}, s_.model_dtype)
                 : coord_ ? part_params_
                          : params16_.flat_view(lo, {master_.numel()});
    round_into(master_, dst);
    if (pswap_) pswap_->write(0, part_.size, dst.raw());
  } else if (host_optimizer()) {  // fp32 on a GPU: the updated range goes back up as it is
    Tensor dst = params_.flat_view(lo, {master_.numel()});
    ops::copy(master_, dst);
  }
  if (pswap_ && !mixed() && !offload_) pswap_->write(0, part_.size, wpart.raw());
  auto t_gather = std::chrono::steady_clock::now();
  timings_.step += std::chrono::duration<double, std::milli>(t_gather - t_step).count();
  // Stages 1-2 all-gather the updated partitions; stage 3 leaves them partitioned, and every
  // gathered copy is now stale.
  if (coord_) coord_->invalidate();
  else if (s_.zero_stage > 0 && comm_ && part_.world > 1) gather_parameters();
  if (mixed() && !coord_) widen_into(params16_, params_);  // the compute copy
  sync_device();  // the step's time on a GPU is its device time too
  auto t_end = std::chrono::steady_clock::now();
  timings_.allgather += std::chrono::duration<double, std::milli>(t_end - t_gather).count();
  if (trace_) trace_->span(io::TraceTrack::kCompute, "step", t_step, t_end);
  return true;
}

void Engine::gather_parameters() {
  // The model's weights (16-bit with mixed precision: half the bytes on the wire).
  Tensor& P = mixed() ? params16_ : params_;
  const int64_t size = part_.size;
  if (!s_.allgather_partitions) {
    // DeepSpeed's allgather_partitions: false: every rank broadcasts its partition in turn.
    std::vector<std::shared_ptr<comm::Work>> ws;
    for (int r = 0; r < part_.world; ++r) {
      Tensor p = P.flat_view(r * size, {size});
      ws.push_back(comm_->broadcast(p, r));
    }
    for (auto& w : ws) w->wait();
    return;
  }
  const int64_t chunk = std::min(size, std::max<int64_t>(1, s_.allgather_bucket_size));
  if (chunk == size) {  // one in-place all-gather: rank r's partition is chunk r of the buffer
    Tensor own = P.flat_view(part_.begin(), {size});
    comm_->all_gather(own, P)->wait();
    return;
  }
  // allgather_bucket_size smaller than a partition: gather the same sub-range [a, b) of every
  // partition at a time through a staging buffer of world x chunk elements.
  if (!gather_staging_.defined())
    gather_staging_ = Tensor::empty({part_.world * chunk}, P.dtype(), s_.device);
  const size_t es = dtype_size(P.dtype());
  char* base = static_cast<char*>(P.raw());
  for (int64_t a = 0; a < size; a += chunk) {
    int64_t len = std::min(chunk, size - a);
    Tensor in = P.flat_view(part_.begin() + a, {len});
    Tensor out = gather_staging_.flat_view(0, {part_.world * len});
    comm_->all_gather(in, out)->wait();
    if (on_device()) {  // device to device, one copy per partition's piece
      for (int r = 0; r < part_.world; ++r) {
        Tensor dst = P.flat_view(r * size + a, {len});
        ops::copy(out.flat_view(r * len, {len}), dst);
      }
      continue;
    }
    const char* src = static_cast<const char*>(out.raw());
    for (int r = 0; r < part_.world; ++r)
      std::memcpy(base + (r * size + a) * es, src + r * len * es, static_cast<size_t>(len) * es);
  }
}

void Engine::add_optimizer_bytes(MemoryBytes& m) const {
  if (offload_) {  // host memory (cpu: master, m, v; nvme: the swap buffers) and the swap file
    m.optimizer += offload_->memory().host_bytes;
    m.nvme += offload_->memory().file_bytes;
    return;
  }
  // (fp32 on a GPU: the host master is a staging copy of the weights, not optimizer state.)
  if (master_.defined())
    (mixed() ? m.optimizer : m.host_staging) += static_cast<int64_t>(master_.nbytes());
  if (host_grads_.defined()) m.host_staging += static_cast<int64_t>(host_grads_.nbytes());
  for (auto& [name, buf] : const_cast<optim::Optimizer&>(*optimizer_).state())
    m.optimizer += static_cast<int64_t>(buf->size() * sizeof(float));
}

Engine::MemoryBytes Engine::model_state_bytes() const {
  MemoryBytes m;
  if (coord_) {  // stage 3: partitions only; the gathered units are workspace
    m.params = part_params_.defined() ? static_cast<int64_t>(part_params_.nbytes()) : 0;
    if (pswap_) m.nvme += pswap_->file_bytes();
    m.grads = static_cast<int64_t>(part_grads_.nbytes());
    m.workspace = coord_->pool_peak_bytes();
    if (grad_scratch_.defined()) m.workspace += static_cast<int64_t>(grad_scratch_.nbytes());
    add_optimizer_bytes(m);
    return m;
  }
  m.params = static_cast<int64_t>(model_params().nbytes());
  if (mixed()) m.workspace = static_cast<int64_t>(params_.nbytes());
  // f32 gradients are the gradient state; with a 16-bit grad_dtype the f32 buffer is the CPU
  // backend's compute output (workspace) and the 16-bit reduced gradients are the state.
  auto bytes = [](const Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0; };
  m.grads = bytes(part_grads_) + bytes(grads16_) + (grads16() ? 0 : bytes(grads_));
  if (grads16()) {
    m.workspace += bytes(grads_) + bytes(grad_scratch_);
    for (const Tensor& t : staging_) m.workspace += bytes(t);
  }
  add_optimizer_bytes(m);
  return m;
}

Engine::MemoryBytes Engine::model_state_formula() const {
  // ZeRO paper (psi = parameters, N = ranks, Adam): mixed precision 2 psi parameters + 2 psi
  // gradients + K psi optimizer states with K = 12 (fp32 master, m, v); fp32 training 4 + 4 + 8
  // (the parameters are their own master copy). Stage 1 divides the optimizer term by N, stage 2
  // the gradient term too.
  const double psi = static_cast<double>(part_.numel), n = part_.world;
  const double wb = mixed() ? 2 : 4, k = mixed() ? 12 : 8;
  MemoryBytes m;
  // Stage 3 divides all three terms by N. (Its gradients are fp32, 4 psi / N, unless
  // grad_accum_dtype makes them 16-bit: 2 psi / N, the paper's count.)
  m.params = static_cast<int64_t>(s_.zero_stage == 3 ? wb * psi / n : wb * psi);
  m.grads = static_cast<int64_t>(s_.zero_stage == 3 ? (grads16() ? 2 : 4) * psi / n
                                 : s_.zero_stage == 2 ? wb * psi / n : wb * psi);
  m.optimizer = static_cast<int64_t>(s_.zero_stage >= 1 ? k * psi / n : k * psi);
  return m;
}

}  // namespace zt::zero
