// core/cuda/stream.h: CUDA streams and events as small RAII types, and the current stream.
//
// No CUDA header here (public header, CONVENTIONS.md 2): a stream is held as the runtime's own
// opaque handle type, `CUstream_st*` (what cudaStream_t is a typedef of), declared forward.
//
//   Stream s = Stream::create(0);           // a non-blocking stream on cuda:0, owned
//   { StreamGuard g(s); ops::matmul(...); } // ops enqueue on the current stream
//   Event e; e.record(s); comm.wait(e);      // order another stream after this work
//
// Every op of the CUDA backend runs on the calling thread's current stream, which is the legacy
// default stream (handle nullptr) until a StreamGuard sets another. Ops that return a host value
// (sum_squares, all_finite, cross_entropy_forward) synchronise the current stream.
// Implementations: core/cuda/runtime.cpp (CUDA build) and core/cuda/stub.cpp (CPU-only build, where
// creating a stream or event throws "built without CUDA" and the default Stream is a null handle).
#pragma once

struct CUstream_st;
struct CUevent_st;

namespace zt::cuda {

class Event;

class Stream {
 public:
  Stream() = default;  // the legacy default stream of the current device (not owned)
  static Stream create(int device, bool non_blocking = true, int priority = 0);
  static Stream wrap(CUstream_st* handle, int device) { return Stream(handle, device, false); }
  ~Stream();
  Stream(Stream&& o) noexcept;
  Stream& operator=(Stream&& o) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  CUstream_st* handle() const { return handle_; }
  int device() const { return device_; }
  void synchronize() const;
  bool query() const;               // true when all work enqueued so far has finished
  void wait(const Event& e) const;  // later work on this stream waits for e (no host sync)

 private:
  Stream(CUstream_st* h, int device, bool owned) : handle_(h), device_(device), owned_(owned) {}
  CUstream_st* handle_ = nullptr;
  int device_ = 0;
  bool owned_ = false;
};

class Event {
 public:
  explicit Event(bool timing = false);  // created on the current device; timing off is cheaper
  ~Event();
  Event(Event&& o) noexcept;
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(const Stream& s);
  void synchronize() const;
  bool query() const;
  CUevent_st* handle() const { return handle_; }
  // Milliseconds between two recorded timing events (the end must have completed).
  static float elapsed_ms(const Event& start, const Event& end);

 private:
  CUevent_st* handle_ = nullptr;
};

// The calling thread's current stream handle (nullptr: the legacy default stream).
CUstream_st* current_stream();

// Makes `s` the current stream (and its device the current device) for the guard's scope.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  CUstream_st* prev_stream_;
  int prev_device_;
};

}  // namespace zt::cuda
