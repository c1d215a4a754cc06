// comm/watchdog.cpp: the collective watchdog (comm/watchdog.h): op progress per communicator, the
// heartbeat all-gather on a side communicator, and the report that names the missing ranks.
#include "comm/watchdog.h"

#include "comm/bootstrap.h"
#include "comm/detail/mpi_check.h"
#include "core/error.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

namespace zt::comm {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int64_t> g_step{-1};

// Registry of live communicators' progress (weak: a communicator's lifetime is its own).
std::mutex g_registry_mu;
std::vector<std::weak_ptr<CommProgress>> g_registry;
int g_next_id = 0;

std::vector<CommProgress::Snapshot> all_snapshots() {
  std::vector<std::shared_ptr<CommProgress>> live;
  {
    std::lock_guard<std::mutex> lk(g_registry_mu);
    std::erase_if(g_registry, [](const std::weak_ptr<CommProgress>& w) { return w.expired(); });
    for (auto& w : g_registry)
      if (auto p = w.lock()) live.push_back(std::move(p));
  }
  std::vector<CommProgress::Snapshot> out;
  for (auto& p : live) out.push_back(p->snapshot());
  return out;
}

// The ops a record can name (an index travels; names are compared by text, not pointer).
const char* const kOps[] = {"all_reduce", "reduce_scatter", "reduce_scatter_v",
                            "all_gather", "all_gather_v",   "broadcast",
                            "all_to_all", "barrier",        "dup"};
constexpr int kNumOps = sizeof kOps / sizeof kOps[0];
int op_code(const char* op) {
  if (op == nullptr) return -1;
  for (int i = 0; i < kNumOps; ++i)
    if (std::strcmp(op, kOps[i]) == 0) return i;
  return kNumOps;  // unknown
}
const char* op_name(int64_t code) { return code >= 0 && code < kNumOps ? kOps[code] : "op"; }

// One rank's heartbeat record: int64 fields, the same layout on every rank.
enum Field : int {
  kRank,
  kPid,
  kNode,
  kStep,
  kStop,
  kComm,
  kOp,
  kSeq,
  kBytes,
  kRunMs,
  kDone0,  // kDoneSlots pairs (communicator id, last completed seq); id -1: unused
  kDoneSlots = 3,
  kFields = kDone0 + 2 * kDoneSlots
};

double env_seconds(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  double x = std::strtod(v, &end);
  if (end == nullptr || *end != '\0' || !(x > 0))
    throw ConfigError(zt::detail::str_cat("environment ", name, "=", v,
                                          ": expected a positive number of seconds"));
  return x;
}

// The first of `names` that is set, as an integer in [lo, hi]; -1 when none is set.
int env_choice(std::initializer_list<const char*> names, int lo, int hi, const char** which) {
  for (const char* name : names) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    char* end = nullptr;
    long x = std::strtol(v, &end, 10);
    if (end == nullptr || *end != '\0' || x < lo || x > hi)
      throw ConfigError(zt::detail::str_cat("environment ", name, "=", v, ": expected an integer ",
                                            lo, "..", hi));
    *which = name;
    return static_cast<int>(x);
  }
  return -1;
}

std::string seconds_str(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.1f" : "%.0f", s);
  return buf;
}

}  // namespace

// ---- CommProgress -------------------------------------------------------------------------------

void CommProgress::begin(const char* op, int64_t seq, int64_t bytes, const char* dtype,
                         int64_t count) {
  std::lock_guard<std::mutex> lk(mu_);
  op_ = op;
  dtype_ = dtype;
  seq_ = seq;
  bytes_ = bytes;
  count_ = count;
  since_ = Clock::now();
}

void CommProgress::end(int64_t seq) {
  std::lock_guard<std::mutex> lk(mu_);
  op_ = nullptr;
  done_seq_ = std::max(done_seq_, seq);
}

CommProgress::Snapshot CommProgress::snapshot() const {
  std::lock_guard<std::mutex> lk(mu_);
  Snapshot s;
  s.id = id_;
  s.op = op_;
  s.dtype = dtype_;
  s.seq = seq_;
  s.bytes = bytes_;
  s.count = count_;
  s.done_seq = done_seq_;
  if (op_ != nullptr) s.running_s = std::chrono::duration<double>(Clock::now() - since_).count();
  return s;
}

std::shared_ptr<CommProgress> register_communicator() {
  std::lock_guard<std::mutex> lk(g_registry_mu);
  auto p = std::make_shared<CommProgress>(g_next_id++);
  g_registry.push_back(p);
  return p;
}

// ---- options ------------------------------------------------------------------------------------

WatchdogOptions options_from_env(double config_timeout_s) {
  WatchdogOptions o;
  o.timeout_s = config_timeout_s;
  if (double t = env_seconds("NCCL_TIMEOUT"); t > 0) {
    o.timeout_s = t;
    o.notes.push_back(zt::detail::str_cat("NCCL_TIMEOUT=", std::getenv("NCCL_TIMEOUT"),
                                          " overrides comm.timeout_s: collectives time out after ",
                                          seconds_str(t), " s"));
  }
  const char* which = nullptr;
  if (env_choice({"TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT"}, 0, 1, &which) == 1) {
    o.blocking_wait = true;
    o.abort_on_timeout = false;
    o.notes.push_back(zt::detail::str_cat(which, "=1: a collective that times out throws on the ",
                                          "waiting thread (the job then ends with exit 1)"));
  }
  const int h =
      env_choice({"TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING"}, 0, 3, &which);
  if (h == 0) {
    o.abort_on_timeout = false;
    o.notes.push_back(zt::detail::str_cat(which, "=0: the watchdog reports timeouts but does not ",
                                          "end the job (it may hang)"));
  } else if (h == 2) {
    o.abort_on_timeout = false;
    o.blocking_wait = true;
    o.notes.push_back(zt::detail::str_cat(which, "=2: a collective that times out throws on the ",
                                          "waiting thread (the job then ends with exit 1)"));
  }
  return o;
}

// ---- Watchdog -----------------------------------------------------------------------------------

struct Watchdog::State {
  WatchdogOptions opt;
  int rank = 0, world = 1, node = 0;
  double heartbeat_s = 1, poll_s = 0.1;
  MPI_Comm hb = MPI_COMM_NULL;

  std::mutex mu;
  std::condition_variable cv;
  bool stop_requested = false, abandon = false, quit_monitor = false;
  bool hb_done = false, consensus = false;
  std::vector<int64_t> latest;  // the last completed round: world x kFields
  int64_t rounds = 0;
  Clock::time_point latest_at;
  bool fired = false;

  void fill(std::vector<int64_t>& r, bool stopping) const;
  void heartbeat_loop();
  void monitor_loop();
  void fire(const CommProgress::Snapshot& stuck);
  std::string report(const CommProgress::Snapshot& stuck);
};

void Watchdog::State::fill(std::vector<int64_t>& r, bool stopping) const {
  std::fill(r.begin(), r.end(), -1);
  r[kRank] = rank;
  r[kPid] = static_cast<int64_t>(::getpid());
  r[kNode] = node;
  r[kStep] = g_step.load();
  r[kStop] = stopping ? 1 : 0;
  std::vector<CommProgress::Snapshot> snaps = all_snapshots();
  std::sort(snaps.begin(), snaps.end(), [](auto& a, auto& b) { return a.id < b.id; });
  const CommProgress::Snapshot* oldest = nullptr;
  for (auto& s : snaps)
    if (s.op != nullptr && (oldest == nullptr || s.running_s > oldest->running_s)) oldest = &s;
  if (oldest != nullptr) {
    r[kComm] = oldest->id;
    r[kOp] = op_code(oldest->op);
    r[kSeq] = oldest->seq;
    r[kBytes] = oldest->bytes;
    r[kRunMs] = static_cast<int64_t>(oldest->running_s * 1e3);
  }
  for (size_t i = 0; i < snaps.size() && i < kDoneSlots; ++i) {
    r[kDone0 + 2 * i] = snaps[i].id;
    r[kDone0 + 2 * i + 1] = snaps[i].done_seq;
  }
}

void Watchdog::State::heartbeat_loop() {
  std::vector<int64_t> send(kFields), recv(static_cast<size_t>(kFields) * world);
  for (;;) {
    bool stopping;
    {
      std::lock_guard<std::mutex> lk(mu);
      stopping = stop_requested;
    }
    fill(send, stopping);
    MPI_Request req = MPI_REQUEST_NULL;
    int rc = MPI_Iallgather(send.data(), kFields, MPI_INT64_T, recv.data(), kFields, MPI_INT64_T,
                            hb, &req);
    if (rc != MPI_SUCCESS) {
      ZT_MPI_CHECK_WARN(rc);
      std::lock_guard<std::mutex> lk(mu);
      hb_done = true;  // no heartbeat: reports will say so
      cv.notify_all();
      return;
    }
    for (;;) {
      int flag = 0;
      rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) ZT_MPI_CHECK_WARN(rc);
      if (flag || rc != MPI_SUCCESS) break;
      std::unique_lock<std::mutex> lk(mu);
      if (cv.wait_for(lk, std::chrono::milliseconds(10), [this] { return abandon; })) {
        hb_done = true;  // the round stays posted: the job is about to end
        cv.notify_all();
        return;
      }
    }
    bool all_stop = true;
    for (int q = 0; q < world; ++q) all_stop = all_stop && recv[q * kFields + kStop] == 1;
    std::unique_lock<std::mutex> lk(mu);
    latest = recv;
    ++rounds;
    latest_at = Clock::now();
    cv.notify_all();
    if (all_stop) {  // every rank saw this same round: all leave after it
      consensus = hb_done = true;
      cv.notify_all();
      return;
    }
    auto pause = std::chrono::duration<double>(heartbeat_s);
    if (cv.wait_for(lk, pause, [this] { return stop_requested || abandon; }) && abandon) {
      hb_done = true;
      cv.notify_all();
      return;
    }
  }
}

void Watchdog::State::monitor_loop() {
  std::unique_lock<std::mutex> lk(mu);
  while (!quit_monitor) {
    cv.wait_for(lk, std::chrono::duration<double>(poll_s), [this] { return quit_monitor; });
    if (quit_monitor || fired) continue;
    lk.unlock();
    const CommProgress::Snapshot* stuck = nullptr;
    std::vector<CommProgress::Snapshot> snaps = all_snapshots();
    for (auto& s : snaps)
      if (s.op != nullptr && s.running_s >= opt.timeout_s &&
          (stuck == nullptr || s.running_s > stuck->running_s))
        stuck = &s;
    if (stuck != nullptr) fire(*stuck);
    lk.lock();
  }
}

std::string Watchdog::State::report(const CommProgress::Snapshot& stuck) {
  // Wait for a round posted after the timeout (fresh records), up to a few heartbeats.
  std::vector<int64_t> recs;
  double age = 0;
  {
    std::unique_lock<std::mutex> lk(mu);
    const int64_t r0 = rounds;
    const double grace = std::min(5.0, 2 * heartbeat_s + 1.0);
    cv.wait_for(lk, std::chrono::duration<double>(grace), [&] { return rounds > r0 || hb_done; });
    recs = latest;
    age = rounds > 0 ? std::chrono::duration<double>(Clock::now() - latest_at).count() : -1;
  }
  const bool stale = age < 0 || age > 2 * heartbeat_s + 1.5;
  std::string what = zt::detail::str_cat(
      stuck.op, " #", stuck.seq, " (", stuck.dtype, ", ", stuck.count, " elements, ", stuck.bytes,
      " bytes", stuck.id == 0 ? "" : zt::detail::str_cat(", communicator ", stuck.id), ")");
  const int64_t step = g_step.load();
  std::string msg = zt::detail::str_cat(
      what, step >= 0 ? zt::detail::str_cat(" at training step ", step) : std::string(),
      " has not completed after ", seconds_str(stuck.running_s), " s (comm.timeout_s ",
      seconds_str(opt.timeout_s), ")");
  if (recs.empty()) {
    return msg +
           "; no heartbeat round has completed, so the other ranks' progress is unknown "
           "(a rank may have died before the first heartbeat)";
  }
  const int my_code = op_code(stuck.op);
  std::vector<std::string> missing, waiting, other;
  for (int q = 0; q < world; ++q) {
    const int64_t* r = recs.data() + static_cast<size_t>(q) * kFields;
    if (q == rank) {
      waiting.push_back(std::to_string(q));
      continue;
    }
    const bool same_op = r[kComm] == stuck.id && r[kSeq] == stuck.seq;
    const bool exited = stale && r[kNode] == node && r[kPid] > 0 &&
                        ::kill(static_cast<pid_t>(r[kPid]), 0) != 0 && errno == ESRCH;
    const bool matches = same_op && r[kOp] == my_code && r[kBytes] == stuck.bytes;
    if (matches && !exited) {
      waiting.push_back(std::to_string(q));
      continue;
    }
    std::string where = zt::detail::str_cat("rank ", q, " (");
    if (exited)
      where += zt::detail::str_cat("its process, pid ", r[kPid], " on this node, has exited; ",
                                   "last seen ");
    if (r[kStep] >= 0) where += zt::detail::str_cat("at step ", r[kStep], ", ");
    if (matches) {
      where += zt::detail::str_cat("in ", op_name(r[kOp]), " #", r[kSeq]);
    } else if (same_op) {
      where += zt::detail::str_cat("in ", op_name(r[kOp]), " #", r[kSeq], " of ", r[kBytes],
                                   " bytes: a different collective; the ranks issued collectives ",
                                   "in different orders or sizes");
    } else if (r[kComm] >= 0) {
      where += zt::detail::str_cat(
          "in ", op_name(r[kOp]), " #", r[kSeq],
          r[kComm] == 0 ? "" : zt::detail::str_cat(" on communicator ", r[kComm]), " for ",
          seconds_str(static_cast<double>(r[kRunMs]) / 1e3), " s");
    } else {
      int64_t done = -2;
      for (int i = 0; i < kDoneSlots; ++i)
        if (r[kDone0 + 2 * i] == stuck.id) done = r[kDone0 + 2 * i + 1];
      where += "not in a collective";
      if (done >= -1)
        where += done < 0 ? std::string(", no op completed yet")
                          : zt::detail::str_cat(", last completed op #", done);
      if (!exited) where += ": computing, in I/O or stalled";
    }
    if (stale) where += zt::detail::str_cat("; as of ", seconds_str(age), " s ago");
    where += ")";
    (same_op && !matches ? other : missing).push_back(std::move(where));
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  if (!missing.empty()) msg += "; missing: " + join(missing);
  if (!other.empty()) msg += "; mismatched: " + join(other);
  if (stale)
    msg += zt::detail::str_cat("; heartbeats stopped ", seconds_str(age),
                               " s ago: a rank has died or its process is frozen");
  msg += "; waiting in it: rank" + std::string(waiting.size() > 1 ? "s " : " ") + join(waiting);
  return msg;
}

void Watchdog::State::fire(const CommProgress::Snapshot& stuck) {
  {
    std::lock_guard<std::mutex> lk(mu);
    fired = true;
  }
  std::string msg = report(stuck);
  if (opt.on_timeout) {
    opt.on_timeout(msg);
    return;
  }
  const bool abort = opt.abort_on_timeout;
  std::fprintf(stderr, "zerotrain: watchdog (rank %d): %s; %s\n", rank, msg.c_str(),
               abort ? zt::detail::str_cat("aborting the job (exit ", opt.exit_code, ")").c_str()
               : opt.blocking_wait
                   ? "the waiting thread gets a CommError (blocking wait)"
                   : "not aborting (NCCL_ASYNC_ERROR_HANDLING=0): the job may hang");
  std::fflush(stderr);
  if (!abort) return;
  // Let the other waiting ranks print their own report before MPI_Abort ends them, and never let
  // a wedged MPI keep this process alive.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const int code = opt.exit_code;
  std::thread([code] {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    std::_Exit(code);
  }).detach();
  Bootstrap::abort(code);
}

Watchdog::Watchdog(WatchdogOptions options) : opt_(std::move(options)) {
  ZT_CHECK(opt_.timeout_s > 0, "Watchdog: timeout_s must be positive, got ", opt_.timeout_s);
  Bootstrap& boot = Bootstrap::instance();
  st_ = std::make_shared<State>();
  st_->opt = opt_;
  st_->rank = boot.topology().rank;
  st_->world = boot.topology().world;
  st_->node = boot.topology().node;
  st_->heartbeat_s =
      opt_.heartbeat_s > 0 ? opt_.heartbeat_s : std::max(0.05, std::min(1.0, opt_.timeout_s / 5));
  st_->poll_s = std::max(0.01, std::min(0.1, opt_.timeout_s / 10));
  ZT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &st_->hb));
  ZT_MPI_CHECK(MPI_Comm_set_errhandler(st_->hb, MPI_ERRORS_RETURN));
  State* s = st_.get();
  if (!boot.thread_multiple()) {
    // Without MPI_THREAD_MULTIPLE a second thread must not call MPI: no heartbeat (reports then
    // cannot name the missing ranks), but the timeout and the abort still work.
    st_->hb_done = st_->consensus = true;
    heartbeat_ = std::thread([] {});
  } else {
    heartbeat_ = std::thread([s] { s->heartbeat_loop(); });
  }
  monitor_ = std::thread([s] { s->monitor_loop(); });
}

void Watchdog::stop() {
  if (stopped_) return;
  stopped_ = true;
  bool done;
  {
    std::unique_lock<std::mutex> lk(st_->mu);
    st_->stop_requested = true;
    st_->cv.notify_all();
    done = st_->cv.wait_for(lk, std::chrono::duration<double>(std::max(5.0, opt_.timeout_s)),
                            [this] { return st_->hb_done; });
    if (!done) {
      st_->abandon = true;
      st_->cv.notify_all();
    }
  }
  if (!done && st_->rank == 0)
    std::fprintf(stderr,
                 "zerotrain: warning: the watchdog's heartbeat did not stop on every rank "
                 "within %.0f s; abandoned\n",
                 std::max(5.0, opt_.timeout_s));
  heartbeat_.join();
  if (st_->consensus) ZT_MPI_CHECK_WARN(MPI_Comm_free(&st_->hb));
  {
    std::lock_guard<std::mutex> lk(st_->mu);
    st_->quit_monitor = true;
    st_->cv.notify_all();
  }
  monitor_.join();
}

Watchdog::~Watchdog() {
  if (stopped_) return;
  if (std::uncaught_exceptions() == 0) {
    stop();
    return;
  }
  // Unwinding: the program is on its way to MPI_Abort; other ranks may never stop.
  stopped_ = true;
  {
    std::lock_guard<std::mutex> lk(st_->mu);
    st_->abandon = st_->quit_monitor = true;
    st_->cv.notify_all();
  }
  heartbeat_.join();
  monitor_.join();
}

void Watchdog::set_step(int64_t step) { g_step.store(step); }
int64_t Watchdog::step() { return g_step.load(); }

}  // namespace zt::comm
