// io/aio.h: asynchronous file I/O for NVMe offload (ZeRO-Infinity's swap files), with io_uring.
//
// DeepSpeed swaps optimizer state to NVMe through its `aio` op (csrc/aio, libaio): a handle with
// `thread_count` threads, each submitting `block_size` requests with at most `queue_depth` in
// flight, on files opened with O_DIRECT so that the page cache neither holds a second copy nor
// hides the drive's speed. This is the same design on io_uring (liburing), one ring per thread:
//   AioFile      a file opened twice, with O_DIRECT and without; every piece of a request that
//                O_DIRECT can take (buffer address, file offset and length multiples of
//                kAioAlignment = 4096, the largest logical block size of common drives) goes
//                through the first, the rest (unaligned heads and tails) through the second. A
//                filesystem that refuses O_DIRECT (EINVAL: ramfs, some FUSE and network
//                filesystems) gets buffered I/O instead, after one warning line per directory.
//   AioEngine    the threads and rings. read()/write() split a request into blocks, hand them to
//                the threads and return at once with an AioTicket; wait() blocks until the
//                request is complete and throws zt::Error naming the file, the byte range and the
//                errno text (ENOSPC, EACCES, EIO...) if any block failed.
//   AlignedBuffer  host memory aligned for O_DIRECT (the allocation helper), optionally mlocked.
//
// The `aio` config block (io::AioConfig, DeepSpeed's keys) maps as follows:
//   block_size     bytes per request (rounded up to a multiple of 4096); blocks of one buffer are
//                  dealt round-robin to the threads by buffer address (see AioOrder).
//   queue_depth    requests in flight per thread (the ring's size).
//   thread_count   threads, each with its own ring and its own share of the blocks.
//   single_submit  true: one io_uring_submit per request (libaio: one io_submit per iocb);
//                  false: everything that fits in the ring goes in with one submit call.
//   overlap_events true: a completed request is replaced at once, keeping queue_depth in flight;
//                  false: a batch of queue_depth is submitted and fully reaped before the next.
// Where io_uring is not available (a seccomp filter, as Docker's default profile since 2023; an
// old kernel), the threads fall back to pread/pwrite (one request at a time per thread), after a
// warning line.
#pragma once

#include "io/config.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace zt::io {

constexpr int64_t kAioAlignment = 4096;

// Host memory for O_DIRECT transfers: `bytes` rounded up to kAioAlignment, aligned to it,
// zero-filled. Move-only.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(int64_t bytes);
  AlignedBuffer(AlignedBuffer&&) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&&) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();

  void* data() const { return data_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  int64_t bytes() const { return bytes_; }
  // Page-locks the memory (mlock: what "pinned" means without a GPU: never swapped out, so a
  // transfer never waits on a page fault). Returns "" on success, else why not (the errno text and
  // the RLIMIT_MEMLOCK to raise); the buffer stays usable either way.
  std::string lock();
  bool locked() const { return locked_; }

 private:
  void* data_ = nullptr;
  int64_t bytes_ = 0;
  bool locked_ = false;
};

// Rounds n up to a multiple of a (a > 0).
constexpr int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

class AioFile {
 public:
  enum class Mode {
    kRead,       // existing file, read only
    kReadWrite,  // created if missing, never truncated
    kCreate,     // created, or truncated to 0 bytes
  };
  // Throws zt::Error "aio: cannot open <path> ...: <errno text>".
  AioFile(std::string path, Mode mode);
  ~AioFile();
  AioFile(const AioFile&) = delete;
  AioFile& operator=(const AioFile&) = delete;

  const std::string& path() const { return path_; }
  bool direct() const;  // O_DIRECT in use (false after the buffered fallback)
  int64_t size() const;
  // Reserves `bytes` of disk (fallocate), so that a full disk fails here, naming the file and the
  // size, rather than in the middle of a training step. Falls back to ftruncate (a sparse file)
  // where the filesystem has no fallocate. Reserved space reads as zeros.
  void allocate(int64_t bytes);
  void sync();  // fdatasync: written data is durable

 private:
  friend class AioEngine;
  void refuse_direct(const char* why);  // switch to buffered I/O, warning once per directory
  std::string path_;
  int fd_ = -1;         // buffered
  int direct_fd_ = -1;  // O_DIRECT, -1 when refused
  struct State;
  std::unique_ptr<State> state_;
};

namespace detail {
struct AioOp;
}

// A request in flight. Copyable; wait through the engine that issued it.
class AioTicket {
 public:
  AioTicket() = default;
  bool valid() const { return op_ != nullptr; }

 private:
  friend class AioEngine;
  explicit AioTicket(std::shared_ptr<detail::AioOp> op) : op_(std::move(op)) {}
  std::shared_ptr<detail::AioOp> op_;
};

// kAfterPrevious: none of the request's bytes of buffer memory is transferred before every request
// issued earlier on overlapping buffer memory has finished with those bytes, whatever their files
// and offsets; everything else keeps flowing past it. The swap pipeline reads sub-group i+1 into
// the buffer that sub-group i-1 is still being written from: each block of the read waits for the
// write's block on the same memory only, so the ring stays full instead of draining at every
// sub-group (the ordering is per block: blocks go to threads by buffer address, block k of the
// address space, k = address / block_size, to thread k mod thread_count, so a byte of memory is
// always handled by the same thread, which holds an ordered block back while an earlier block on
// its memory is queued or in flight). kAny: no ordering (the default).
enum class AioOrder { kAny, kAfterPrevious };

class AioEngine {
 public:
  enum class Backend { kAuto, kUring, kPosix };  // kAuto: io_uring, pread/pwrite if unavailable
  explicit AioEngine(const AioConfig& cfg = {}, Backend backend = Backend::kAuto);
  ~AioEngine();  // waits for every request (errors are dropped), then stops the threads
  AioEngine(const AioEngine&) = delete;
  AioEngine& operator=(const AioEngine&) = delete;

  // Reads/writes `bytes` at `offset` of `file` into/from `buf`. Returns at once; `buf` and `file`
  // must stay valid until the ticket is waited for. A read past the end of the file fails.
  AioTicket read(AioFile& file, void* buf, int64_t bytes, int64_t offset,
                 AioOrder order = AioOrder::kAny);
  AioTicket write(AioFile& file, const void* buf, int64_t bytes, int64_t offset,
                  AioOrder order = AioOrder::kAny);
  // Blocks until the request is complete; throws zt::Error "aio: write of <path> (bytes [a, b)):
  // <errno text>" if a block failed. A ticket may be waited for more than once.
  void wait(const AioTicket& t);
  bool done(const AioTicket& t) const;  // complete (successfully or not), without blocking
  void wait_all();  // every request issued so far; throws the first error not yet reported

  bool uses_uring() const { return uring_; }
  const AioConfig& config() const { return cfg_; }
  int64_t bytes_read() const;
  int64_t bytes_written() const;

 private:
  struct Worker;
  AioTicket submit(AioFile& file, char* buf, int64_t bytes, int64_t offset, bool write,
                   AioOrder order);
  AioConfig cfg_;
  bool uring_ = false;
  std::vector<std::unique_ptr<Worker>> workers_;
  struct Pending;
  std::unique_ptr<Pending> pending_;
};

}  // namespace zt::io
