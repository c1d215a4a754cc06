// io/aio.cpp: io_uring file I/O (io/aio.h has the design and the mapping of DeepSpeed's keys).
//
// A request becomes a list of blocks (at most block_size bytes each); blocks are dealt to the
// worker threads by buffer address; each thread keeps up to queue_depth of its blocks in flight on
// its own ring and counts completed blocks down on the request (detail::AioOp), whose waiter wakes
// at zero. Short transfers (allowed by POSIX, rare on local disks) are resubmitted for the rest;
// EAGAIN/EINTR are retried; EINVAL on an O_DIRECT block switches the file to buffered I/O and
// retries (some filesystems accept O_DIRECT at open and refuse it per request).
#include "io/aio.h"

#include "core/error.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

namespace zt::io {

namespace {
std::string errno_text(int err) { return std::strerror(err); }
bool aligned(int64_t x) { return x % kAioAlignment == 0; }
bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAioAlignment == 0; }

// One warning line per directory (a rank's swap files share one).
void warn_once(const std::string& key, const std::string& line) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(key).second) std::fprintf(stderr, "zerotrain: warning: %s\n", line.c_str());
}
}  // namespace

// ---- AlignedBuffer ------------------------------------------------------------------------------

AlignedBuffer::AlignedBuffer(int64_t bytes)
    : bytes_(round_up(std::max<int64_t>(bytes, 0), kAioAlignment)) {
  if (bytes_ == 0) return;
  data_ = std::aligned_alloc(kAioAlignment, static_cast<size_t>(bytes_));
  ZT_CHECK(data_ != nullptr, "aio: cannot allocate an aligned buffer of ", bytes_, " bytes");
  std::memset(data_, 0, static_cast<size_t>(bytes_));  // also touches every page now
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(o.data_), bytes_(o.bytes_), locked_(o.locked_) {
  o.data_ = nullptr;
  o.bytes_ = 0;
  o.locked_ = false;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  std::swap(data_, o.data_);
  std::swap(bytes_, o.bytes_);
  std::swap(locked_, o.locked_);
  return *this;
}

AlignedBuffer::~AlignedBuffer() {
  if (locked_) ::munlock(data_, static_cast<size_t>(bytes_));
  std::free(data_);
  data_ = nullptr;
}

std::string AlignedBuffer::lock() {
  if (locked_ || bytes_ == 0) return "";
  if (::mlock(data_, static_cast<size_t>(bytes_)) == 0) {
    locked_ = true;
    return "";
  }
  const int err = errno;
  rlimit lim{};
  ::getrlimit(RLIMIT_MEMLOCK, &lim);
  return "mlock of " + std::to_string(bytes_) + " bytes failed: " + errno_text(err) +
         " (RLIMIT_MEMLOCK is " +
         (lim.rlim_cur == RLIM_INFINITY ? std::string("unlimited")
                                        : std::to_string(lim.rlim_cur) + " bytes") +
         "; raise it with `ulimit -l`)";
}

// ---- AioFile ------------------------------------------------------------------------------------

struct AioFile::State {
  std::atomic<bool> direct{false};
};

AioFile::AioFile(std::string path, Mode mode) : path_(std::move(path)), state_(new State) {
  int flags = O_CLOEXEC;
  const char* what = "reading";
  if (mode == Mode::kRead) {
    flags |= O_RDONLY;
  } else {
    flags |= O_RDWR | O_CREAT | (mode == Mode::kCreate ? O_TRUNC : 0);
    what = "writing";
  }
  fd_ = ::open(path_.c_str(), flags, 0644);
  if (fd_ < 0) throw Error("aio: cannot open " + path_ + " for " + what + ": " + errno_text(errno));
  direct_fd_ = ::open(path_.c_str(), (flags & ~(O_CREAT | O_TRUNC)) | O_DIRECT);
  if (direct_fd_ >= 0) {
    state_->direct = true;
  } else if (errno == EINVAL) {
    refuse_direct(errno_text(EINVAL).c_str());
  } else {
    const int err = errno;
    ::close(fd_);
    throw Error("aio: cannot open " + path_ + " with O_DIRECT for " + what + ": " +
                errno_text(err));
  }
}

AioFile::~AioFile() {
  if (direct_fd_ >= 0) ::close(direct_fd_);
  if (fd_ >= 0) ::close(fd_);
}

bool AioFile::direct() const { return state_->direct.load(); }

void AioFile::refuse_direct(const char* why) {
  state_->direct = false;
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  warn_once(dir, path_ + ": the filesystem refuses O_DIRECT (" + why +
                     "): buffered I/O through the page cache instead (slower; uses host memory)");
}

int64_t AioFile::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw Error("aio: cannot stat " + path_ + ": " + errno_text(errno));
  return st.st_size;
}

void AioFile::allocate(int64_t bytes) {
  if (bytes <= 0) return;
  int rc = ::posix_fallocate(fd_, 0, bytes);  // returns the error, does not set errno
  if (rc == EOPNOTSUPP || rc == EINVAL) {
    rc = ::ftruncate(fd_, bytes) == 0 ? 0 : errno;
  }
  if (rc != 0)
    throw Error("aio: cannot reserve " + std::to_string(bytes) + " bytes for " + path_ + ": " +
                errno_text(rc) +
                (rc == ENOSPC ? " (free space on that drive or choose another nvme_path)" : ""));
}

void AioFile::sync() {
  if (::fdatasync(fd_) != 0) throw Error("aio: fdatasync of " + path_ + ": " + errno_text(errno));
}

// ---- requests -----------------------------------------------------------------------------------

namespace detail {
struct AioOp {
  AioFile* file = nullptr;
  bool write = false;
  int64_t offset = 0, bytes = 0;
  std::mutex mu;
  std::condition_variable cv;
  int64_t remaining = 0;  // blocks not yet complete
  std::string error;      // the first failure
  std::atomic<bool> failed{false};
  bool reported = false;  // its error was thrown by wait()

  void fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (error.empty())
      error = std::string("aio: ") + (write ? "write of " : "read of ") + file->path() +
              " (bytes [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) +
              ")) failed: " + why;
    failed = true;
  }
  void block_done() {
    std::lock_guard<std::mutex> lock(mu);
    if (--remaining == 0) cv.notify_all();
  }
};
}  // namespace detail

namespace {
struct Block {
  detail::AioOp* op = nullptr;
  char* buf = nullptr;
  int64_t bytes = 0, offset = 0;
  bool after = false;  // AioOrder::kAfterPrevious: after earlier blocks on overlapping memory
  bool direct = false;
  bool overlaps(const Block& o) const { return buf < o.buf + o.bytes && o.buf < buf + bytes; }
};
}  // namespace

struct AioEngine::Pending {
  std::mutex mu;
  std::vector<std::shared_ptr<detail::AioOp>> ops;  // issued and not yet reaped by wait_all
  std::atomic<int64_t> bytes_read{0}, bytes_written{0};
};

struct AioEngine::Worker {
  AioEngine* engine = nullptr;
  bool uring = false;
  io_uring ring{};
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Block> incoming;
  bool stop = false;
  std::thread thread;

  void push(std::vector<Block>& blocks) {
    {
      std::lock_guard<std::mutex> lock(mu);
      for (Block& b : blocks) incoming.push_back(b);
    }
    cv.notify_one();
  }

  // Takes new blocks (blocking while idle); false when told to stop and nothing is left.
  bool take(std::deque<Block>& local, bool idle) {
    std::unique_lock<std::mutex> lock(mu);
    if (idle) cv.wait(lock, [&] { return stop || !incoming.empty(); });
    if (idle && incoming.empty()) return false;  // stop
    while (!incoming.empty()) {
      local.push_back(incoming.front());
      incoming.pop_front();
    }
    return true;
  }

  // Outcome of one transfer of b (res: bytes, or -errno): true when b is finished.
  bool complete(Block& b, int64_t res) {
    AioFile& f = *b.op->file;
    if (res > 0)
      (b.op->write ? engine->pending_->bytes_written : engine->pending_->bytes_read) += res;
    if (res == -EAGAIN || res == -EINTR) return false;
    if (res == -EINVAL && b.direct) {
      f.refuse_direct("EINVAL on an O_DIRECT request");
      b.direct = false;
      return false;
    }
    if (res < 0) {
      b.op->fail(errno_text(static_cast<int>(-res)));
    } else if (res == 0) {
      b.op->fail(b.op->write ? "the device accepted 0 bytes"
                             : "end of file at offset " + std::to_string(b.offset) + " (" +
                                   f.path() + " has " + std::to_string(f.size()) + " bytes)");
    } else if (res < b.bytes) {  // short transfer: the rest goes again
      b.buf += res;
      b.offset += res;
      b.bytes -= res;
      return false;
    }
    b.op->block_done();
    return true;
  }

  int fd_for(Block& b) {
    AioFile& f = *b.op->file;
    b.direct = b.direct && f.direct() && aligned(b.buf) && aligned(b.offset) && aligned(b.bytes);
    return b.direct ? f.direct_fd_ : f.fd_;
  }

  void run_posix() {
    std::deque<Block> local;
    while (take(local, local.empty())) {
      while (!local.empty()) {
        Block b = local.front();
        local.pop_front();
        if (b.op->failed) {
          b.op->block_done();
          continue;
        }
        for (;;) {
          const int fd = fd_for(b);
          const ssize_t r = b.op->write
                                ? ::pwrite(fd, b.buf, static_cast<size_t>(b.bytes), b.offset)
                                : ::pread(fd, b.buf, static_cast<size_t>(b.bytes), b.offset);
          if (complete(b, r < 0 ? -errno : r)) break;
        }
      }
    }
  }

  void run_uring() {
    const AioConfig& cfg = engine->cfg_;
    const int depth = static_cast<int>(cfg.queue_depth);
    std::vector<Block> slots(static_cast<size_t>(depth));
    std::vector<int> free_slots;
    for (int i = depth - 1; i >= 0; --i) free_slots.push_back(i);
    std::deque<Block> local;
    int inflight = 0;
    for (;;) {
      if (!take(local, local.empty() && inflight == 0)) return;
      // Submit: all that fits (overlap_events), or a new batch once the last one is reaped. Blocks
      // go in queue order, except that an ordered block (Block::after) whose memory an earlier
      // block still in flight or still queued overlaps stays queued, and later blocks pass it:
      // the ring stays full while a read waits for the write from the same buffer.
      int prepared = 0;
      if (cfg.overlap_events || inflight == 0) {
        std::deque<Block> held;  // queued blocks passed over, in order
        while (inflight < depth && !local.empty()) {
          Block& b = local.front();
          if (b.op->failed) {  // the request already failed: skip its other blocks
            b.op->block_done();
            local.pop_front();
            continue;
          }
          if (b.after && blocked(b, slots, held)) {
            held.push_back(b);
            local.pop_front();
            continue;
          }
          io_uring_sqe* sqe = io_uring_get_sqe(&ring);
          if (sqe == nullptr) break;
          const int slot = free_slots.back();
          free_slots.pop_back();
          slots[static_cast<size_t>(slot)] = b;
          slots[static_cast<size_t>(slot)].after = false;  // a retry need not wait again
          local.pop_front();
          Block& s = slots[static_cast<size_t>(slot)];
          const int fd = fd_for(s);
          if (s.op->write)
            io_uring_prep_write(sqe, fd, s.buf, static_cast<unsigned>(s.bytes),
                                static_cast<uint64_t>(s.offset));
          else
            io_uring_prep_read(sqe, fd, s.buf, static_cast<unsigned>(s.bytes),
                               static_cast<uint64_t>(s.offset));
          io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(slot));
          ++inflight;
          ++prepared;
          if (cfg.single_submit) submit();
        }
        while (!held.empty()) {  // back to the front of the queue, in their order
          local.push_front(held.back());
          held.pop_back();
        }
      }
      if (prepared > 0 && !cfg.single_submit) submit();
      if (inflight == 0) continue;
      // Reap: at least one completion; with overlap_events off, the whole batch.
      do {
        io_uring_cqe* cqe = nullptr;
        int rc = io_uring_wait_cqe(&ring, &cqe);
        if (rc == -EINTR) continue;
        ZT_ASSERT(rc == 0, "io_uring_wait_cqe: ", errno_text(-rc));
        do {
          const int slot = static_cast<int>(io_uring_cqe_get_data64(cqe));
          const int64_t res = cqe->res;
          io_uring_cqe_seen(&ring, cqe);
          --inflight;
          Block& b = slots[static_cast<size_t>(slot)];
          if (!complete(b, res)) local.push_front(b);  // retry (the rest of) it first
          b = Block{};
          free_slots.push_back(slot);
        } while (io_uring_peek_cqe(&ring, &cqe) == 0);
      } while (!cfg.overlap_events && inflight > 0);
    }
  }

  // An ordered block waits while a block queued before it (held: passed over in this round) or
  // in flight (a free slot is an empty Block, which overlaps nothing) covers any of its bytes.
  // Memory maps to threads by address (AioEngine::submit), so every earlier block on these bytes
  // is this thread's.
  static bool blocked(const Block& b, const std::vector<Block>& slots,
                      const std::deque<Block>& held) {
    for (const Block& h : held)
      if (h.overlaps(b)) return true;
    for (const Block& s : slots)
      if (s.overlaps(b)) return true;
    return false;
  }

  void submit() {
    int rc;
    do rc = io_uring_submit(&ring);
    while (rc == -EINTR || rc == -EAGAIN);
    ZT_ASSERT(rc >= 0, "io_uring_submit: ", errno_text(-rc));
  }
};

// ---- AioEngine ----------------------------------------------------------------------------------

AioEngine::AioEngine(const AioConfig& cfg, Backend backend) : cfg_(cfg), pending_(new Pending) {
  ZT_CHECK_CONFIG(cfg_.block_size > 0, "aio.block_size", "must be positive, got ", cfg_.block_size);
  ZT_CHECK_CONFIG(cfg_.queue_depth > 0 && cfg_.queue_depth <= 4096, "aio.queue_depth",
                  "must be in [1, 4096], got ", cfg_.queue_depth);
  ZT_CHECK_CONFIG(cfg_.thread_count > 0 && cfg_.thread_count <= 256, "aio.thread_count",
                  "must be in [1, 256], got ", cfg_.thread_count);
  cfg_.block_size = round_up(cfg_.block_size, kAioAlignment);
  // One request may move at most 2 GiB - 4 KiB (io_uring's length is 32 bits, and Linux caps a
  // transfer at 0x7ffff000 bytes).
  cfg_.block_size = std::min<int64_t>(cfg_.block_size, int64_t{1} << 30);
  uring_ = backend != Backend::kPosix;
  for (int64_t t = 0; t < cfg_.thread_count; ++t) {
    auto w = std::make_unique<Worker>();
    w->engine = this;
    if (uring_) {
      const int rc = io_uring_queue_init(static_cast<unsigned>(cfg_.queue_depth), &w->ring, 0);
      if (rc < 0) {
        if (backend == Backend::kUring)
          throw Error("aio: io_uring_queue_init failed: " + errno_text(-rc));
        warn_once("io_uring",
                  "io_uring is not available (" + errno_text(-rc) +
                      "): NVMe offload uses pread/pwrite threads (slower: one request in flight "
                      "per aio thread)");
        for (auto& prev : workers_) {
          io_uring_queue_exit(&prev->ring);
          prev->uring = false;
        }
        uring_ = false;
      } else {
        w->uring = true;
      }
    }
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) {
    Worker* wp = w.get();
    wp->thread = std::thread([wp] { wp->uring ? wp->run_uring() : wp->run_posix(); });
  }
}

AioEngine::~AioEngine() {
  try {
    wait_all();
  } catch (const std::exception&) {  // reported by whoever waits; a destructor must not throw
  }
  for (auto& w : workers_) {
    {
      std::lock_guard<std::mutex> lock(w->mu);
      w->stop = true;
    }
    w->cv.notify_one();
    w->thread.join();
    if (w->uring) io_uring_queue_exit(&w->ring);
  }
}

AioTicket AioEngine::read(AioFile& file, void* buf, int64_t bytes, int64_t offset, AioOrder order) {
  return submit(file, static_cast<char*>(buf), bytes, offset, false, order);
}

AioTicket AioEngine::write(AioFile& file, const void* buf, int64_t bytes, int64_t offset,
                           AioOrder order) {
  // The buffer is only read from; the const_cast lets one Block type serve both directions.
  return submit(file, static_cast<char*>(const_cast<void*>(buf)), bytes, offset, true, order);
}

AioTicket AioEngine::submit(AioFile& file, char* buf, int64_t bytes, int64_t offset, bool write,
                            AioOrder order) {
  ZT_CHECK(bytes >= 0 && offset >= 0, "aio: negative size or offset for ", file.path());
  auto op = std::make_shared<detail::AioOp>();
  op->file = &file;
  op->write = write;
  op->offset = offset;
  op->bytes = bytes;
  // Pieces: an unaligned head up to the first 4 KiB boundary of the file, the aligned middle in
  // block_size blocks (O_DIRECT), an unaligned tail. When buffer and offset disagree modulo 4 KiB
  // nothing can go direct: the whole request is "head".
  const int64_t A = kAioAlignment, bs = cfg_.block_size, T = cfg_.thread_count;
  int64_t head = bytes, body_end = bytes;
  if ((reinterpret_cast<uintptr_t>(buf) - static_cast<uintptr_t>(offset)) % A == 0) {
    head = std::min(bytes, (A - offset % A) % A);
    body_end = head + (bytes - head) / A * A;
  }
  std::vector<std::vector<Block>> per_thread(static_cast<size_t>(T));
  auto add = [&](int64_t lo, int64_t hi, bool direct) {
    for (int64_t a = lo; a < hi;) {
      // Cut at multiples of block_size in the address space, so a buffer's k-th block is the same
      // piece of memory (and goes to the same thread) in every request on it.
      const uintptr_t addr = reinterpret_cast<uintptr_t>(buf + a);
      const int64_t to_edge = bs - static_cast<int64_t>(addr % static_cast<uintptr_t>(bs));
      const int64_t n = std::min(hi - a, to_edge);
      Block b;
      b.op = op.get();
      b.buf = buf + a;
      b.bytes = n;
      b.offset = offset + a;
      b.after = order == AioOrder::kAfterPrevious;
      b.direct = direct;
      per_thread[static_cast<size_t>((addr / static_cast<uintptr_t>(bs)) %
                                     static_cast<uintptr_t>(T))]
          .push_back(b);
      a += n;
    }
  };
  add(0, head, false);
  add(head, body_end, true);
  add(body_end, bytes, false);
  int64_t count = 0;
  for (auto& v : per_thread) count += static_cast<int64_t>(v.size());
  op->remaining = count;
  {
    std::lock_guard<std::mutex> lock(pending_->mu);
    // Forget finished requests whose outcome needs no reporting (keeps the list short when the
    // caller waits ticket by ticket).
    auto& v = pending_->ops;
    v.erase(std::remove_if(v.begin(), v.end(),
                           [](const std::shared_ptr<detail::AioOp>& o) {
                             std::lock_guard<std::mutex> l(o->mu);
                             return o->remaining == 0 && (o->error.empty() || o->reported);
                           }),
            v.end());
    v.push_back(op);
  }
  // Every byte of memory maps to one thread (cut at block_size multiples of the address), so an
  // ordered block and every earlier block on its bytes meet on one thread, which orders them.
  for (size_t t = 0; t < per_thread.size(); ++t) {
    if (per_thread[t].empty()) continue;
    workers_[t]->push(per_thread[t]);
  }
  return AioTicket(op);
}

void AioEngine::wait(const AioTicket& t) {
  ZT_CHECK(t.valid(), "aio: wait on an empty ticket");
  detail::AioOp& op = *t.op_;
  std::unique_lock<std::mutex> lock(op.mu);
  op.cv.wait(lock, [&] { return op.remaining == 0; });
  if (!op.error.empty()) {
    op.reported = true;
    throw Error(op.error);
  }
}

bool AioEngine::done(const AioTicket& t) const {
  if (!t.valid()) return true;
  std::lock_guard<std::mutex> lock(t.op_->mu);
  return t.op_->remaining == 0;
}

void AioEngine::wait_all() {
  std::vector<std::shared_ptr<detail::AioOp>> ops;
  {
    std::lock_guard<std::mutex> lock(pending_->mu);
    ops.swap(pending_->ops);
  }
  std::string first;
  for (auto& op : ops) {
    std::unique_lock<std::mutex> lock(op->mu);
    op->cv.wait(lock, [&] { return op->remaining == 0; });
    if (first.empty() && !op->reported) first = op->error;
  }
  if (!first.empty()) throw Error(first);
}

int64_t AioEngine::bytes_read() const { return pending_->bytes_read.load(); }
int64_t AioEngine::bytes_written() const { return pending_->bytes_written.load(); }

}  // namespace zt::io
