// io/checkpoint_writer.h: asynchronous checkpointing: a snapshot of one rank's tensors in owned
// host buffers, written by a background thread while training goes on (DeepSpeed's async/Nebula
// idea).
//
// The engine takes the snapshot at a step boundary (a copy: training may overwrite its buffers the
// moment snapshot() returns), hands it to BackgroundWriter::start, and later wait()s for the
// FileRecord before the collective part of the save (barrier, gather, rank 0's commit_save). The
// writer runs write_shard() only: no MPI, no communicator, nothing shared with training but the
// snapshot it owns (DESIGN.md: the background writer never uses the training communicator).
// The engine's asynchronous save (io/checkpoint_async.h) runs the whole save protocol, collectives
// included, on a BackgroundJob of its own and reuses one ShardSnapshot from save to save.
#pragma once

#include "core/tensor.h"
#include "io/checkpoint_store.h"
#include "io/safetensors.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace zt::io {

// Named tensors copied into buffers the snapshot owns; movable, not copyable.
class ShardSnapshot {
 public:
  ShardSnapshot() = default;
  ShardSnapshot(ShardSnapshot&&) = default;
  ShardSnapshot& operator=(ShardSnapshot&&) = default;

  void add(std::string name, const Tensor& t);  // a CPU tensor, copied now
  void add(std::string name, DType dtype, Shape shape, const void* data);  // bytes, copied now
  // Replaces the contents with a copy of every tensor and metadata entry of `w` (whose bytes are
  // borrowed). The buffers of the previous contents are reused where large enough, so that a
  // snapshot taken at every save touches already-mapped pages instead of faulting in new ones.
  void assign(const SafetensorsWriter& w);
  void set_metadata(std::string key, std::string value) {
    writer_.set_metadata(std::move(key), std::move(value));
  }

  const SafetensorsWriter& writer() const { return writer_; }
  uint64_t bytes() const { return bytes_; }

 private:
  // unique_ptr keeps each buffer's address stable while the vector grows (the writer points at it).
  std::vector<std::unique_ptr<std::byte[]>> buffers_;
  std::vector<uint64_t> capacity_;  // bytes of each buffer
  size_t used_ = 0;                 // buffers holding the current contents (assign reuses the rest)
  SafetensorsWriter writer_;
  uint64_t bytes_ = 0;
};

namespace detail {
// Lowers the calling thread's CPU priority by `nice` (Linux: nice is per thread), so that a
// background write yields the cores to training; 0 leaves it. Best effort: failures are ignored.
void lower_thread_priority(int nice);
}  // namespace detail

// One task on a thread of its own, its result or exception collected by wait(): at most one in
// flight. The thread runs at `nice` lower priority (detail::lower_thread_priority).
template <class T>
class BackgroundJob {
 public:
  BackgroundJob() = default;
  ~BackgroundJob() {
    if (thread_.joinable()) thread_.join();
  }
  BackgroundJob(const BackgroundJob&) = delete;
  BackgroundJob& operator=(const BackgroundJob&) = delete;

  // Throws zt::Error when the previous task was not collected with wait().
  void start(std::function<T()> task, int nice = 0);
  bool busy() const {  // running
    return result_.valid() &&
           result_.wait_for(std::chrono::seconds(0)) != std::future_status::ready;
  }
  bool pending() const { return result_.valid(); }  // started, not yet collected
  T wait() {  // blocks; returns the result or rethrows the task's exception
    check_pending();
    if (thread_.joinable()) thread_.join();
    return result_.get();
  }

 private:
  void check_pending() const;
  std::thread thread_;
  std::future<T> result_;
};

class BackgroundWriter {
 public:
  BackgroundWriter() = default;
  ~BackgroundWriter();  // waits for a running write; its error, if any, is printed, not thrown
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;

  // Starts write_shard(dir, tag, rank, snapshot) on a new thread. Throws zt::Error if a write is
  // still running or its result was not collected with wait() (one save at a time per rank).
  void start(std::string dir, std::string tag, int rank, ShardSnapshot snapshot,
             ShardWriteOptions options = {});
  bool busy() const;     // a write is running
  bool pending() const;  // started and not yet collected by wait()
  // Blocks until the write ends; returns its FileRecord or rethrows its CheckpointError.
  FileRecord wait();

 private:
  BackgroundJob<FileRecord> job_;
};

// ---- BackgroundJob ------------------------------------------------------------------------------

namespace detail {
[[noreturn]] void background_job_error(const char* what);
}

template <class T>
void BackgroundJob<T>::check_pending() const {
  if (!result_.valid()) detail::background_job_error("wait: no task was started");
}

template <class T>
void BackgroundJob<T>::start(std::function<T()> task, int nice) {
  if (result_.valid())
    detail::background_job_error(busy() ? "start: the previous task is still running"
                                        : "start: the previous task was not collected with wait()");
  if (thread_.joinable()) thread_.join();
  std::packaged_task<T()> pt([task = std::move(task), nice]() {
    detail::lower_thread_priority(nice);
    return task();
  });
  result_ = pt.get_future();
  thread_ = std::thread(std::move(pt));
}

}  // namespace zt::io
