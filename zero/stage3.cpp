// zero/stage3.cpp: the stage-3 parameter coordinator (see zero/stage3.h for the scheme).
//
// Every decision that issues a collective (gather now, prefetch, keep or drop) depends only on
// state that is the same on every rank: the recorded order, the position in it, which units are
// released/in flight/live, and the element counts. Never on timing (Work::test()), or ranks would
// issue different collectives.
#include "zero/stage3.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "core/ops.h"
#include "precision/convert.h"
#include "zero/param_swap.h"

namespace zt::zero {
namespace {
const char* phase_name(int p) {
  switch (static_cast<Stage3Phase>(p)) {
    case Stage3Phase::forward: return "forward";
    case Stage3Phase::recompute: return "recompute";
    case Stage3Phase::backward: return "backward";
  }
  return "?";
}
}  // namespace

ParamCoordinator::ParamCoordinator(std::vector<Stage3Unit> units, const Partition& part,
                                   Tensor part_params, Tensor part_grads, comm::Communicator* comm,
                                   std::unique_ptr<comm::Communicator> check_comm,
                                   Stage3Options opts, ParamSwap* swap)
    : units_(std::move(units)),
      state_(units_.size()),
      part_(part),
      part_params_(std::move(part_params)),
      part_grads_(std::move(part_grads)),
      comm_(comm && part.world > 1 ? comm : nullptr),
      swap_(swap),
      check_comm_(std::move(check_comm)),
      o_(opts) {
  ZT_ASSERT((swap_ || part_params_.numel() == part_.size) && part_grads_.numel() == part_.size,
            "stage 3: partition buffers of the wrong size");
  int64_t persistent_total = 0;
  for (size_t u = 0; u < units_.size(); ++u) {
    const Stage3Unit& su = units_[u];
    std::vector<int64_t> c(static_cast<size_t>(part_.world));
    for (int r = 0; r < part_.world; ++r)
      c[r] = std::max<int64_t>(0, part_.owner_hi(r, su.hi) - part_.owner_lo(r, su.lo));
    counts_.push_back(std::move(c));
    // Persistence: small units stay gathered between optimizer steps, in unit order until the
    // model-wide budget is spent.
    const int64_t n = su.hi - su.lo;
    if (n < o_.param_persistence_threshold && persistent_total + n <= o_.model_persistence_threshold) {
      state_[u].persistent = true;
      persistent_total += n;
    }
    unbind(static_cast<int>(u));
    for (nn::Parameter* p : su.params) p->grad = Tensor();
  }
}

ParamCoordinator::~ParamCoordinator() {
  for (PendingCheck& c : checks_) c.work->wait();
  // Collectives still in flight write into pool buffers: let them finish.
  for (State& s : state_)
    if (s.work) s.work->wait();
  for (Reduction& r : reductions_)
    if (r.work) r.work->wait();
}

// ---- the pool ---------------------------------------------------------------------------------

Tensor ParamCoordinator::take(int64_t n, DType dt) {
  auto& list = free_[{n, static_cast<int>(dt)}];
  if (!list.empty()) {
    Tensor t = std::move(list.back());
    list.pop_back();
    return t;
  }
  Tensor t = Tensor::empty({n}, dt);
  pool_bytes_ += static_cast<int64_t>(t.nbytes());
  pool_peak_ = std::max(pool_peak_, pool_bytes_);
  return t;
}

void ParamCoordinator::give(Tensor t) {
  if (!t.defined()) return;
  free_[{t.numel(), static_cast<int>(t.dtype())}].push_back(std::move(t));
}

// ---- binding ----------------------------------------------------------------------------------

void ParamCoordinator::bind(int u) {
  const Stage3Unit& su = units_[u];
  for (size_t i = 0; i < su.params.size(); ++i)
    su.params[i]->value = state_[u].value.flat_view(su.offsets[i] - su.lo, su.shapes[i]);
}

void ParamCoordinator::unbind(int u) {
  // A released parameter points at nothing: a layer that reads it outside acquire/release fails
  // loudly instead of reading stale or freed weights.
  for (nn::Parameter* p : units_[u].params) p->value = Tensor();
}

// ---- the order check --------------------------------------------------------------------------
//
// Every acquire posts (unit, phase) on the check communicator (its own MPI context and thread, so
// the exchange never queues behind gradient reductions), and the results are compared in order.
// When to wait for a result is the whole point: waiting at every acquire would be a barrier per
// unit. The rule: a collective on the training communicator may be waited for only after every
// check posted before it was issued has been verified. So
//   - an acquire that must issue a gather now (the unit is not prefetched), or that differs from
//     the recorded order on this rank, or that happens before the order is recorded, verifies
//     every pending check, its own included, before issuing anything (a sync point anyway: the
//     gather it issues next is a collective);
//   - an acquire that finds its unit prefetched, as recorded, verifies only the older checks
//     (posted one unit earlier or more: complete by now unless a rank lags a whole unit);
//   - every other blocking wait (a reduction without overlap, the end of the window, dropping a
//     unit still in flight) verifies everything first.
// A rank that diverges detects it at once (it leaves the recorded order, or issues a gather the
// others do not); the others detect it at their next acquire or blocking wait. Collectives issued
// in between may be mismatched and can never complete, so a mismatch ends the job (the message on
// every rank that sees it, then MPI_Abort) instead of unwinding into waits that would hang.

void ParamCoordinator::check_order(int unit, Stage3Phase phase) {
  ++accesses_;
  if (!check_comm_) return;
  const int w = part_.world;
  PendingCheck c;
  Tensor mine = Tensor::empty({2}, DType::i32);
  c.all = Tensor::empty({2 * w}, DType::i32);
  mine.data<int32_t>()[0] = unit;
  mine.data<int32_t>()[1] = static_cast<int32_t>(phase);
  c.work = check_comm_->all_gather(mine, c.all);
  c.index = accesses_;
  checks_.push_back(std::move(c));
}

void ParamCoordinator::verify_checks(size_t keep) {
  while (checks_.size() > keep) {
    PendingCheck& c = checks_.front();
    c.work->wait();
    const int w = part_.world;
    const int32_t* a = c.all.data<int32_t>();
    bool same = true;
    for (int r = 1; r < w; ++r) same = same && a[2 * r] == a[0] && a[2 * r + 1] == a[1];
    if (!same) {
      std::string who;
      for (int r = 0; r < w; ++r) {
        const int u = a[2 * r];
        who += detail::str_cat(r ? "; " : "", "rank ", r, " runs ",
                               u >= 0 && u < static_cast<int>(units_.size()) ? units_[u].name : "?",
                               " (unit ", u, ") ", phase_name(a[2 * r + 1]));
      }
      order_error(detail::str_cat(
          "ZeRO stage 3: the ranks run the model's units in different orders (data-dependent "
          "control flow?): at parameter fetch #", c.index, " ", who,
          ". Each unit's parameters are gathered with a collective, so every rank must run the "
          "same units in the same order"));
    }
    checks_.pop_front();
  }
}

void ParamCoordinator::order_error(const std::string& message) {
  std::fprintf(stderr, "zerotrain: error (rank %d): %s; ending the job\n", part_.rank,
               message.c_str());
  comm::Bootstrap::abort(1);
}

// ---- gather, wait, drop -----------------------------------------------------------------------

void ParamCoordinator::gather(int u) {
  State& s = state_[u];
  ZT_ASSERT(s.status == Status::released, "stage 3: gather of a unit that is not released");
  const int64_t n = numel(u);
  const Stage3Unit& su = units_[u];
  const int64_t a = std::min(std::max(su.lo, part_.begin()), part_.end());
  const int64_t c = counts_[u][part_.rank];
  Tensor mine;
  if (swap_) {  // offload_param nvme: this rank's piece comes from the swap file
    s.piece = take(c, o_.model_dtype);
    swap_->read(a - part_.begin(), c, s.piece.raw());
    mine = s.piece;
  } else {
    mine = part_params_.flat_view(a - part_.begin(), {c});
  }
  s.value = take(n, DType::f32);
  const bool mixed = o_.model_dtype != DType::f32;
  if (!comm_) {  // one rank: the partition is the whole model
    if (mixed) precision::widen_to_f32(mine, s.value);
    else ops::copy(mine, s.value);
  } else if (mixed) {
    s.gather16 = take(n, o_.model_dtype);
    s.work = comm_->all_gather_v(mine, s.gather16, counts_[u]);
  } else {
    s.work = comm_->all_gather_v(mine, s.value, counts_[u]);
  }
  s.status = Status::inflight;
  ++gathers_;
  if (!s.persistent) live_elems_ += n;
}

void ParamCoordinator::wait_gather(int u) {
  State& s = state_[u];
  if (s.status != Status::inflight) return;
  if (s.work) {
    s.work->wait();
    s.work.reset();
  }
  if (s.gather16.defined()) {
    precision::widen_to_f32(s.gather16, s.value);
    give(std::move(s.gather16));
    s.gather16 = Tensor();
  }
  give(std::move(s.piece));
  s.piece = Tensor();
  s.status = Status::live;
  bind(u);
}

void ParamCoordinator::drop(int u) {
  State& s = state_[u];
  if (s.status == Status::released) return;
  ZT_ASSERT(s.users == 0, "stage 3: dropping ", units_[u].name, " while in use");
  if (s.work) {
    verify_checks(0);
    s.work->wait();
    s.work.reset();
  }
  give(std::move(s.gather16));
  s.gather16 = Tensor();
  give(std::move(s.piece));
  s.piece = Tensor();
  unbind(u);
  give(std::move(s.value));
  s.value = Tensor();
  s.status = Status::released;
  if (!s.persistent) live_elems_ -= numel(u);
}

// ---- the recorded order and prefetch -----------------------------------------------------------

void ParamCoordinator::begin_forward() {
  for (size_t u = 0; u < units_.size(); ++u)
    if (!state_[u].persistent && state_[u].users == 0) drop(static_cast<int>(u));
  pos_ = 0;
  if (!trace_done_) {
    recording_on_ = true;
    recording_.clear();
    backward_seen_ = false;
  }
}

void ParamCoordinator::record(int unit) {
  if (trace_done_) {
    if (pos_ < trace_.size() && trace_[pos_] == unit) {
      ++pos_;
      return;
    }
    // The model ran another order than the recorded one (the same on every rank: the order check
    // passed): record again from the next forward, no prefetching meanwhile.
    trace_done_ = false;
    recording_on_ = false;
    trace_.clear();
    return;
  }
  if (recording_on_) recording_.push_back(unit);
}

void ParamCoordinator::end_backward() {
  if (!trace_done_ && recording_on_ && backward_seen_) {
    trace_ = std::move(recording_);
    recording_.clear();
    trace_done_ = true;
    recording_on_ = false;
  }
}

void ParamCoordinator::prefetch() {
  if (!trace_done_ || !comm_ || o_.prefetch_bucket_size <= 0) return;
  int64_t inflight = 0;
  for (size_t u = 0; u < units_.size(); ++u)
    if (state_[u].status == Status::inflight) inflight += numel(static_cast<int>(u));
  int64_t budget = o_.prefetch_bucket_size - inflight;
  for (size_t i = pos_; i < trace_.size() && budget > 0; ++i) {
    std::vector<int> need{trace_[i]};
    need.insert(need.end(), units_[trace_[i]].also.begin(), units_[trace_[i]].also.end());
    for (int w : need) {
      if (state_[w].status != Status::released) continue;
      if (numel(w) > budget) return;
      if (!state_[w].persistent && live_elems_ + numel(w) > o_.max_live_parameters) return;
      gather(w);
      budget -= numel(w);
    }
  }
}

bool ParamCoordinator::keep_for_reuse(int unit) const {
  if (!trace_done_) return false;
  if (live_elems_ > o_.max_live_parameters) return false;
  int64_t distance = 0;
  for (size_t i = pos_; i < trace_.size(); ++i) {
    const Stage3Unit& su = units_[trace_[i]];
    if (trace_[i] == unit || std::find(su.also.begin(), su.also.end(), unit) != su.also.end())
      return distance <= o_.max_reuse_distance;
    distance += numel(trace_[i]);
    if (distance > o_.max_reuse_distance) return false;
  }
  return false;  // not needed again in this micro-batch
}

// ---- acquire / release ------------------------------------------------------------------------

void ParamCoordinator::acquire(int unit, Stage3Phase phase) {
  ZT_ASSERT(unit >= 0 && unit < static_cast<int>(units_.size()), "stage 3: unit ", unit);
  check_order(unit, phase);
  const bool as_recorded = trace_done_ && pos_ < trace_.size() && trace_[pos_] == unit;
  record(unit);
  if (phase == Stage3Phase::backward) backward_seen_ = true;
  std::vector<int> need{unit};
  need.insert(need.end(), units_[unit].also.begin(), units_[unit].also.end());
  bool must_gather = false;
  for (int w : need) must_gather = must_gather || state_[w].status == Status::released;
  // See "the order check" above: verify this acquire's own check only when it must.
  verify_checks(as_recorded && !must_gather ? 1 : 0);
  for (int w : need) {
    ++state_[w].users;
    if (state_[w].status == Status::released) gather(w);
    else ++prefetch_hits_;
  }
  // Queue the next units' gathers behind this one before waiting for it: they run on the comm
  // thread while this unit computes.
  prefetch();
  for (int w : need) {
    wait_gather(w);
    State& s = state_[w];
    if (phase == Stage3Phase::backward && !s.grad.defined()) {
      s.grad = take(numel(w), DType::f32);
      ops::fill(s.grad, 0.f);
      const Stage3Unit& su = units_[w];
      for (size_t i = 0; i < su.params.size(); ++i)
        su.params[i]->grad = s.grad.flat_view(su.offsets[i] - su.lo, su.shapes[i]);
    }
  }
}

void ParamCoordinator::release(int unit, Stage3Phase phase) {
  std::vector<int> need{unit};
  need.insert(need.end(), units_[unit].also.begin(), units_[unit].also.end());
  // The unit's own gradient is complete after its own backward (a tied unit's gradient, e.g. the
  // embedding's from the head, keeps accumulating until its own backward).
  if (phase == Stage3Phase::backward) reduce_grad(unit);
  for (int w : need) {
    State& s = state_[w];
    ZT_ASSERT(s.users > 0, "stage 3: release of ", units_[w].name, " without acquire");
    if (--s.users > 0 || s.persistent || keep_for_reuse(w)) continue;
    drop(w);
  }
}

// ---- gradients --------------------------------------------------------------------------------

void ParamCoordinator::reduce_grad(int u) {
  State& s = state_[u];
  ZT_ASSERT(s.grad.defined(), "stage 3: no gradient buffer for ", units_[u].name);
  Tensor g = std::move(s.grad);
  s.grad = Tensor();
  for (nn::Parameter* p : units_[u].params) p->grad = Tensor();
  const Stage3Unit& su = units_[u];
  const int64_t a = std::min(std::max(su.lo, part_.begin()), part_.end());
  const int64_t c = counts_[u][part_.rank], dst = a - part_.begin();
  const bool g16 = o_.grad_dtype != DType::f32;
  if (g16) {  // round the unit's gradient once; its f32 buffer goes back to the pool at once
    Tensor r = take(g.numel(), o_.grad_dtype);
    precision::copy_master_to_model(g, r);
    give(std::move(g));
    g = r;
  }
  if (!comm_) {  // one rank: the whole unit is ours
    accumulate(dst, g.flat_view(a - su.lo, {c}));
    give(std::move(g));
    return;
  }
  Tensor out = take(c, o_.grad_dtype);
  reductions_.push_back({comm_->reduce_scatter_v(g, out, counts_[u], comm::ReduceOp::avg), g, out, dst});
  drain(!o_.overlap_comm);
}

void ParamCoordinator::drain(bool all) {
  if (all) verify_checks(0);
  // First in, first out: the adds into the partition happen in issue order whatever the timing,
  // so the sum over micro-batches is the same bits on every run.
  while (!reductions_.empty()) {
    Reduction& r = reductions_.front();
    if (all) r.work->wait();
    else if (!r.work->test()) return;
    accumulate(r.dst, r.out);
    give(std::move(r.grad));
    give(std::move(r.out));
    reductions_.pop_front();
  }
}

void ParamCoordinator::accumulate(int64_t dst, const Tensor& piece) {
  Tensor acc = part_grads_.flat_view(dst, {piece.numel()});
  if (acc.dtype() == DType::f32) {
    ops::add(acc, piece, acc);
    return;
  }
  // 16-bit partition: add in f32, round once.
  Tensor t = take(piece.numel(), DType::f32);
  precision::widen_to_f32(acc, t);
  precision::accumulate_to_f32(piece, t);
  precision::copy_master_to_model(t, acc);
  give(std::move(t));
}

void ParamCoordinator::finish_reductions() { drain(true); }

void ParamCoordinator::invalidate() {
  for (size_t u = 0; u < units_.size(); ++u) {
    ZT_ASSERT(state_[u].users == 0, "stage 3: invalidate while ", units_[u].name, " is in use");
    drop(static_cast<int>(u));
  }
}

}  // namespace zt::zero
