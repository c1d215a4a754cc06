// zero/offload.cpp: optimizer offload to host memory or NVMe (zero/offload.h has the design).
#include "zero/offload.h"

#include "core/error.h"

// OpenMP's runtime API only (the team size of the update's parallel regions, in optim/adam.cpp);
// libgomp comes with zt_optim.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace zt::zero {
namespace {

const std::string kKey = "zero_optimization.offload_optimizer";

// The part of `segments` inside [lo, hi), relative to lo.
std::vector<optim::Segment> clip(const std::vector<optim::Segment>& segments, int64_t lo,
                                 int64_t hi) {
  std::vector<optim::Segment> out;
  for (const optim::Segment& s : segments) {
    const int64_t a = std::max(s.offset, lo), b = std::min(s.offset + s.size, hi);
    if (a < b) out.push_back({a - lo, b - a, s.decay, s.tensor});
  }
  return out;
}

// The calling thread's OpenMP team size (nthreads-var) set for a scope and restored after it.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) {
    if (n != saved_) omp_set_num_threads(n);
  }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

void pin(io::AlignedBuffer& b, const char* what) {
  const std::string why = b.lock();
  if (!why.empty())
    std::fprintf(stderr,
                 "zerotrain: warning: %s.pin_memory: cannot page-lock the %s: %s; continuing "
                 "with pageable memory\n",
                 kKey.c_str(), what, why.c_str());
}

}  // namespace

OffloadOptions offload_options(const io::Config& cfg, int rank) {
  const io::OffloadConfig& o = cfg.zero.offload_optimizer;
  ZT_CHECK_CONFIG(o.enabled(), kKey + ".device", "offload_options() called without an offload");
  ZT_CHECK_CONFIG(o.ratio >= 1.0, kKey + ".ratio", "partial offload (ratio ", o.ratio,
                  " < 1) keeps the rest of the optimizer state in GPU memory, and this run has no "
                  "GPU backend: set ratio to 1");
  ZT_CHECK_CONFIG(o.buffer_count >= 1, kKey + ".buffer_count", "must be at least 1, got ",
                  o.buffer_count);
  OffloadOptions opt;
  opt.device = o.device;
  opt.nvme_path = o.nvme_path;
  opt.rank = rank;
  opt.pin_memory = o.pin_memory;
  opt.buffer_count = o.buffer_count;
  opt.pipeline_read = o.pipeline_read;
  opt.pipeline_write = o.pipeline_write;
  opt.sub_group_size = cfg.zero.sub_group_size;
  opt.aio = cfg.aio;
  return opt;
}

const std::vector<std::string>& OptimizerOffload::state_names() {
  static const std::vector<std::string> names = {"master", "exp_avg", "exp_avg_sq"};
  return names;
}

int OptimizerOffload::state_index(const std::string& name) const {
  const auto& names = state_names();
  const auto it = std::find(names.begin(), names.end(), name);
  ZT_CHECK(it != names.end(), "OptimizerOffload: no state named `", name,
           "` (master, exp_avg, exp_avg_sq)");
  return static_cast<int>(it - names.begin());
}

OptimizerOffload::OptimizerOffload(const optim::AdamParams& adam, int64_t n,
                                   const OffloadOptions& opt)
    : adam_(adam), opt_(opt), n_(n) {
  ZT_CHECK(n >= 0, "OptimizerOffload: negative size ", n);
  ZT_CHECK_CONFIG(opt.sub_group_size >= 0, "zero_optimization.sub_group_size",
                  "must be at least 0 (0: one sub-group per parameter), got ", opt.sub_group_size);
  ZT_CHECK_CONFIG(opt.buffer_count >= 1, kKey + ".buffer_count", "must be at least 1, got ",
                  opt.buffer_count);
  bounds_ = {0};
  if (opt.sub_group_size >= 1) {
    for (int64_t lo = opt.sub_group_size; lo < n; lo += opt.sub_group_size) bounds_.push_back(lo);
  } else {
    for (int64_t start : opt.param_starts) {
      ZT_CHECK(start > bounds_.back() && start <= n, "OptimizerOffload: param_starts must increase "
               "inside (0, ", n, "], got ", start, " after ", bounds_.back());
      if (start < n) bounds_.push_back(start);
    }
  }
  if (n > 0) bounds_.push_back(n);
  groups_ = static_cast<int64_t>(bounds_.size()) - 1;
  slots_ = {0};
  for (int64_t g = 0; g < groups_; ++g) {
    const int64_t size = bounds_[static_cast<size_t>(g) + 1] - bounds_[static_cast<size_t>(g)];
    group_ = std::max(group_, size);
    slots_.push_back(slots_.back() + io::round_up(size * 4, io::kAioAlignment));
  }
  stride_ = io::round_up(group_ * 4, io::kAioAlignment);

  if (opt.device == io::OffloadDevice::kCpu) {
    // Planes 4 KiB-aligned plus 256 bytes: m and v then sit 256 and 512 bytes past p modulo 4 KiB
    // (all three at the same offset cost ~40% of the step on Zen 4: 4K aliasing of loads and
    // stores; the in-memory optimizer's std::vectors happen to be staggered).
    plane_ = io::round_up(n * 4, io::kAioAlignment) / 4 + 64;
    host_ = io::AlignedBuffer(3 * plane_ * 4);
    if (opt.pin_memory) pin(host_, "optimizer state");
    return;
  }
  ZT_CHECK_CONFIG(opt.device == io::OffloadDevice::kNvme, kKey + ".device",
                  "OptimizerOffload needs device cpu or nvme");
  ZT_CHECK_CONFIG(!opt.nvme_path.empty(), kKey + ".nvme_path",
                  "offloading to nvme needs `nvme_path`");
  namespace fs = std::filesystem;
  dir_ = (fs::path(opt.nvme_path) / ("zerotrain_rank" + std::to_string(opt.rank))).string();
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec)
    throw Error("offload: cannot create the swap directory " + dir_ + " (" + kKey +
                ".nvme_path): " + ec.message());
  path_ = (fs::path(dir_) / "optimizer.swp").string();
  file_ = std::make_unique<io::AioFile>(path_, io::AioFile::Mode::kCreate);
  file_->allocate(slot_offset(groups_));
  const int64_t buffers = std::min(opt.buffer_count, std::max<int64_t>(groups_, 1));
  for (int64_t b = 0; b < buffers; ++b) {
    buffers_.emplace_back(3 * stride_);
    if (opt.pin_memory) pin(buffers_.back(), "swap buffers");
  }
  aio_ = std::make_unique<io::AioEngine>(opt.aio);
}

OptimizerOffload::~OptimizerOffload() {
  aio_.reset();  // waits for anything in flight
  file_.reset();
  if (!path_.empty()) {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
    std::filesystem::remove(dir_, ec);  // only if empty
  }
}

bool OptimizerOffload::set_betas(float beta1, float beta2) {
  adam_.beta1 = beta1;
  adam_.beta2 = beta2;
  return true;
}

void OptimizerOffload::step(const float* grads, const std::vector<optim::Segment>& segments,
                            float lr, const SubGroupDone& on_updated) {
  ++t_;
  if (on_nvme()) {
    step_nvme(grads, segments, lr, on_updated);
    return;
  }
  const int64_t plane = plane_;
  float* master = host_.as<float>();
  float* m = master + plane;
  float* v = master + 2 * plane;
  for (int64_t g = 0; g < groups_; ++g) {
    const int64_t lo = sub_group_begin(g), hi = sub_group_begin(g + 1);
    optim::adam_update(adam_, t_, lr, master + lo, grads + lo, m + lo, v + lo,
                       clip(segments, lo, hi));
    if (on_updated) on_updated(lo, hi - lo, master + lo);
  }
}

int64_t OptimizerOffload::group_of(int64_t offset) const {
  return static_cast<int64_t>(std::upper_bound(bounds_.begin(), bounds_.end(), offset) -
                              bounds_.begin()) - 1;
}

int OptimizerOffload::update_threads() const {
  const int max = omp_get_max_threads();
  if (opt_.update_threads > 0) return static_cast<int>(opt_.update_threads);
  const bool overlapped = on_nvme() && groups_ > 1 &&
                          ((opt_.pipeline_read && buffers_.size() > 1) || opt_.pipeline_write);
  if (!overlapped) return max;
  const int64_t free_cores = omp_get_num_procs() - opt_.aio.thread_count;
  return static_cast<int>(std::clamp<int64_t>(free_cores, 1, max));
}

void OptimizerOffload::step_nvme(const float* grads, const std::vector<optim::Segment>& segments,
                                 float lr, const SubGroupDone& on_updated) {
  const ScopedOmpThreads team(update_threads());
  const int64_t B = static_cast<int64_t>(buffers_.size());
  // Reads issued ahead of the sub-group being updated (0: read each one when it is needed).
  const int64_t ahead = opt_.pipeline_read ? B - 1 : 0;
  std::vector<io::AioTicket> reads(static_cast<size_t>(groups_)), writes(reads.size());
  auto buffer = [&](int64_t g) -> io::AlignedBuffer& {
    return buffers_[static_cast<size_t>(g % B)];
  };
  // The buffer of sub-group g last held g - B: while its write is in flight, the read is ordered
  // after it (io::AioOrder::kAfterPrevious: each block of the read waits for the write's block on
  // the same memory, the rest of the queue keeps flowing).
  auto read = [&](int64_t g) {
    const bool busy = g >= B && !aio_->done(writes[static_cast<size_t>(g - B)]);
    reads[static_cast<size_t>(g)] =
        aio_->read(*file_, buffer(g).data(), 3 * stride(g), slot_offset(g),
                   busy ? io::AioOrder::kAfterPrevious : io::AioOrder::kAny);
  };
  for (int64_t g = 0; g < std::min(ahead, groups_); ++g) read(g);
  for (int64_t g = 0; g < groups_; ++g) {
    if (ahead == 0) read(g);
    aio_->wait(reads[static_cast<size_t>(g)]);
    if (ahead > 0 && g + ahead < groups_) read(g + ahead);
    const int64_t lo = sub_group_begin(g), hi = sub_group_begin(g + 1);
    float* master = buffer(g).as<float>();
    float* m = master + stride(g) / 4;
    float* v = master + 2 * stride(g) / 4;
    optim::adam_update(adam_, t_, lr, master, grads + lo, m, v, clip(segments, lo, hi));
    io::AioTicket& w = writes[static_cast<size_t>(g)];
    w = aio_->write(*file_, master, 3 * stride(g), slot_offset(g));
    if (!opt_.pipeline_write) aio_->wait(w);
    if (on_updated) on_updated(lo, hi - lo, master);
  }
  aio_->wait_all();
}

void OptimizerOffload::read_state(const std::string& name, int64_t offset, int64_t count,
                                  float* dst) {
  const int k = state_index(name);
  ZT_CHECK(offset >= 0 && count >= 0 && offset + count <= n_, "OptimizerOffload::read_state(", name,
           "): range [", offset, ", ", offset + count, ") outside [0, ", n_, ")");
  if (!on_nvme()) {
    const int64_t plane = plane_;
    std::memcpy(dst, host_.as<float>() + k * plane + offset, static_cast<size_t>(count) * 4);
    return;
  }
  io::AlignedBuffer& scratch = buffers_[0];
  for (int64_t g = group_of(offset); count > 0; ++g) {
    const int64_t lo = sub_group_begin(g), a = offset - lo;
    const int64_t len = std::min(count, sub_group_begin(g + 1) - offset);
    aio_->wait(aio_->read(*file_, scratch.data(), stride(g), slot_offset(g) + k * stride(g)));
    std::memcpy(dst, scratch.as<float>() + a, static_cast<size_t>(len) * 4);
    dst += len;
    offset += len;
    count -= len;
  }
}

void OptimizerOffload::write_state(const std::string& name, int64_t offset, int64_t count,
                                   const float* src) {
  const int k = state_index(name);
  ZT_CHECK(offset >= 0 && count >= 0 && offset + count <= n_, "OptimizerOffload::write_state(",
           name, "): range [", offset, ", ", offset + count, ") outside [0, ", n_, ")");
  if (!on_nvme()) {
    const int64_t plane = plane_;
    std::memcpy(host_.as<float>() + k * plane + offset, src, static_cast<size_t>(count) * 4);
    return;
  }
  io::AlignedBuffer& scratch = buffers_[0];
  for (int64_t g = group_of(offset); count > 0; ++g) {
    const int64_t lo = sub_group_begin(g), hi = sub_group_begin(g + 1), a = offset - lo;
    const int64_t len = std::min(count, hi - offset);
    const int64_t at = slot_offset(g) + k * stride(g);
    if (a > 0 || len < hi - lo)  // part of the sub-group: keep the rest
      aio_->wait(aio_->read(*file_, scratch.data(), stride(g), at));
    std::memcpy(scratch.as<float>() + a, src, static_cast<size_t>(len) * 4);
    aio_->wait(aio_->write(*file_, scratch.data(), stride(g), at));
    src += len;
    offset += len;
    count -= len;
  }
}

OptimizerOffload::Memory OptimizerOffload::memory() const {
  Memory m;
  if (!on_nvme()) {
    m.host_bytes = host_.bytes();
    return m;
  }
  for (const auto& b : buffers_) m.host_bytes += b.bytes();
  m.file_bytes = slot_offset(groups_);
  return m;
}

const std::string& OptimizerOffload::swap_path() const { return path_; }

std::string OptimizerOffload::describe() const {
  const Memory m = memory();
  std::string s = std::string("optimizer offload to ") + (on_nvme() ? "nvme" : "cpu") + ": " +
                  std::to_string(n_) + " parameters in " + std::to_string(groups_) +
                  " sub-group(s) of " + (opt_.sub_group_size >= 1 ? "" : "up to ") +
                  std::to_string(group_) +
                  (opt_.sub_group_size >= 1 ? "" : " (one per parameter: sub_group_size 0)") +
                  ", host " +
                  std::to_string(m.host_bytes) + " bytes";
  if (on_nvme())
    s += " (" + std::to_string(buffers_.size()) + " swap buffers), file " + path_ + " " +
         std::to_string(m.file_bytes) + " bytes" + (file_->direct() ? "" : " (buffered I/O)") +
         (aio_->uses_uring() ? "" : " (pread/pwrite)");
  if (on_nvme() && update_threads() != omp_get_max_threads())
    s += ", update on " + std::to_string(update_threads()) + " OpenMP thread(s)";
  if (opt_.pin_memory) s += ", pinned";
  return s;
}

namespace {
class OffloadFacade final : public optim::Optimizer {
 public:
  explicit OffloadFacade(OptimizerOffload& o) : o_(o) {}
  std::string name() const override {
    return std::string(o_.adam().adam_w_mode ? "AdamW" : "Adam") + ", offloaded to " +
           (o_.on_nvme() ? "nvme" : "cpu");
  }
  void init(int64_t) override {}
  void step(float*, const float*, int64_t, const std::vector<optim::Segment>&, float) override {
    throw Error("OffloadFacade::step: the engine steps the offloaded optimizer directly");
  }
  std::vector<std::pair<std::string, std::vector<float>*>> state() override { return {}; }
  int64_t step_count() const override { return o_.step_count(); }
  void set_step_count(int64_t s) override { o_.set_step_count(s); }
  bool set_betas(float b1, float b2) override { return o_.set_betas(b1, b2); }

 private:
  OptimizerOffload& o_;
};
}  // namespace

std::unique_ptr<optim::Optimizer> make_offload_facade(OptimizerOffload& offload) {
  return std::make_unique<OffloadFacade>(offload);
}

}  // namespace zt::zero
