// io/checkpoint_writer.cpp: owned snapshots and the background shard writer.
#include "io/checkpoint_writer.h"

#include "core/error.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace zt::io {

namespace detail {
void lower_thread_priority(int nice) {
  if (nice <= 0) return;
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  errno = 0;
  const int now = ::getpriority(PRIO_PROCESS, tid);
  if (errno == 0) (void)::setpriority(PRIO_PROCESS, tid, std::min(19, now + nice));
}
void background_job_error(const char* what) {
  throw Error(std::string("BackgroundJob::") + what);
}
}  // namespace detail

void ShardSnapshot::add(std::string name, DType dtype, Shape shape, const void* data) {
  const uint64_t n = static_cast<uint64_t>(shape_numel(shape)) * dtype_size(dtype);
  if (used_ == buffers_.size() || capacity_[used_] < n) {  // no reusable buffer: a new one
    buffers_.insert(buffers_.begin() + static_cast<std::ptrdiff_t>(used_),
                    std::make_unique<std::byte[]>(n ? n : 1));
    capacity_.insert(capacity_.begin() + static_cast<std::ptrdiff_t>(used_), n);
  }
  std::byte* buf = buffers_[used_++].get();
  if (n) std::memcpy(buf, data, n);
  writer_.add(std::move(name), dtype, std::move(shape), buf);
  bytes_ += n;
}

void ShardSnapshot::assign(const SafetensorsWriter& w) {
  writer_ = SafetensorsWriter{};
  bytes_ = 0;
  used_ = 0;
  for (const SafetensorsEntry& e : w.entries()) add(e.name, e.dtype, e.shape, e.data);
  for (const auto& [k, v] : w.metadata()) writer_.set_metadata(k, v);
  // Buffers the new contents did not need (a smaller state) are released.
  buffers_.resize(used_);
  capacity_.resize(used_);
}

void ShardSnapshot::add(std::string name, const Tensor& t) {
  ZT_CHECK(t.defined(), "ShardSnapshot: tensor '", name, "' is undefined");
  ZT_CHECK(t.device().is_cpu(), "ShardSnapshot: tensor '", name, "' is on ", t.device().str(),
           ": copy it to the host first");
  add(std::move(name), t.dtype(), t.shape(), t.numel() ? t.raw() : nullptr);
}

BackgroundWriter::~BackgroundWriter() {
  if (!job_.pending()) return;
  try {
    wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zerotrain: background checkpoint write failed: %s\n", e.what());
  }
}

void BackgroundWriter::start(std::string dir, std::string tag, int rank, ShardSnapshot snapshot,
                             ShardWriteOptions options) {
  ZT_CHECK(!pending(), "BackgroundWriter::start: the previous write (",
           busy() ? "still running" : "finished", ") was not collected with wait()");
  // std::function needs a copyable callable: the snapshot travels in a shared_ptr.
  auto snap = std::make_shared<ShardSnapshot>(std::move(snapshot));
  job_.start([dir = std::move(dir), tag = std::move(tag), rank, snap,
              options = std::move(options)]() {
    return write_shard(dir, tag, rank, snap->writer(), options);
  });
}

bool BackgroundWriter::pending() const { return job_.pending(); }
bool BackgroundWriter::busy() const { return job_.busy(); }

FileRecord BackgroundWriter::wait() {
  ZT_CHECK(job_.pending(), "BackgroundWriter::wait: no write was started");
  return job_.wait();  // rethrows the write's exception
}

}  // namespace zt::io
