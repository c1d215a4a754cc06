// comm/compressed.h: 1-bit compressed all-reduce with error feedback, the communication of the
// 1-bit optimizers (OneBitAdam, ZeroOneAdam, OneBitLamb: optim/onebit.h).
//
// The scheme is DeepSpeed's compressed_allreduce (deepspeed/runtime/comm/mpi.py, nccl.py), from
// Tang et al. 2021, "1-bit Adam" (arXiv:2102.02888), Algorithm 1's two-phase error-compensated
// compression. Every rank is a worker for the whole buffer and the server of one chunk of it:
//   worker  x  = buf + worker_error                  (n padded to `padded`, padding zeros)
//           s  = ||x||_2 / sqrt(padded)              (one scale for the whole buffer)
//           worker_error = x - s * sign(x)           (the part the 1-bit message cannot carry)
//           chunk r of sign(x), packed 8 per byte, and s go to rank r     (phase 1: all-to-all)
//   server  y  = sum_r s_r sign_r(chunk) / world + server_error    (the average of the messages)
//           s' = ||y|| / sqrt(chunk),  server_error = y - s' sign(y)
//           sign(y) packed, and s', go to every rank                      (phase 2: all-gather)
//   result  chunk r of buf = s'_r * sign_r: the same on every rank.
// The two error buffers persist across calls (one pair per CompressedAllReduce object): what a
// call rounds away is added back in the next, so over T calls with the same input the average of
// the results approaches the exact mean with an error that shrinks like 1/T (error feedback;
// tests/comm/test_compressed.cpp measures it).
//
// Sign convention and bit order (both DeepSpeed's): sign(x) = +1 for x >= 0 (zero included: 1-bit
// cannot say 0; DeepSpeed's sign().add_(1).bool()), -1 for x < 0; a bit is 1 for +1. Element i of
// a run is bit (7 - i % 8) of byte i / 8: most significant bit first, numpy/cupy packbits' default
// "big" order, so a byte 0b1000'0000 means element 0 positive and elements 1..7 negative.
//
// Wire format. A chunk is `chunk` elements, a multiple of 32, so its packed signs fill whole
// 32-bit words; the buffer is padded to world x chunk (DeepSpeed pads to a multiple of world x
// lcm(world, 8): the same idea). Each message is one block of 1 + chunk / 32 int32 words: the
// scale's float bits, then the signs. Phase 1 is one all_to_all of world blocks, phase 2 one
// all_gather of one block per rank: per call a rank sends 2 (world - 1) blocks, about
// 2 (world - 1) chunk / 8 bytes, against 2 (world - 1) chunk x 4 bytes for a ring all-reduce of
// the f32 buffer: 1/32 of the bytes (plus 8 bytes of scales per peer).
//
// Backends. It runs on any Communicator that implements all_to_all and all_gather; today that is
// the `mpi` backend on host memory (MPI_Alltoall / MPI_Allgather of the packed words). The nccl
// backend does not exist yet (no GPU here); with it the same blocks would move with
// ncclSend/ncclRecv groups and ncclAllGather on device buffers, and compression would be a kernel.
// Compression runs on the calling thread, vectorized (AVX-512 / AVX2 / plain loops, compressed.cpp);
// run() blocks until the result is in `buf`.
#pragma once

#include "core/tensor.h"

#include <cstdint>
#include <vector>

namespace zt::comm {

class Communicator;

// Packs the signs of x[0, n) into (n + 7) / 8 bytes, in the order above; the unused low bits of a
// last partial byte are 0.
void pack_signs(const float* x, int64_t n, uint8_t* out);
// out[i] = +scale where bit i is 1, -scale where it is 0, for i in [0, n).
void unpack_signs(const uint8_t* bits, int64_t n, float scale, float* out);
// out[i] += (+scale where bit i is 1, else -scale): the server's sum of decompressed messages.
void accumulate_signs(const uint8_t* bits, int64_t n, float scale, float* out);
// One compression with error feedback, in place on x[0, n): x += error; s = ||x|| / sqrt(n);
// error = x - s sign(x); packs sign(x) into bits; returns s. (Both phases use it.)
float compress_with_feedback(float* x, float* error, int64_t n, uint8_t* bits);

class CompressedAllReduce {
 public:
  // A compressed average of n-element f32 buffers over comm's ranks. Collective in use (every
  // rank calls run() in the same order), not in construction. comm must outlive this object.
  CompressedAllReduce(Communicator& comm, int64_t n);

  // buf[0, n) on every rank -> the compressed average of the ranks' buffers (identical on every
  // rank). Blocks.
  void run(float* buf);

  // Zeroes both error buffers (DeepSpeed does it on checkpoint load, and 0/1 Adam when it switches
  // from compressing gradients to compressing accumulated momentum).
  void reset_errors();

  int64_t size() const { return n_; }
  int64_t padded() const { return chunk_ * world_; }
  int64_t chunk() const { return chunk_; }  // the server part of each rank, a multiple of 32
  const std::vector<float>& worker_error() const { return worker_error_; }  // padded() floats
  const std::vector<float>& server_error() const { return server_error_; }  // chunk() floats
  // For checkpoints (the optimizers' rank_state, optim/optimizer.h): the buffers themselves. A
  // caller that refills them must keep their sizes (errors_sized() checks it).
  std::vector<float>* mutable_worker_error() { return &worker_error_; }
  std::vector<float>* mutable_server_error() { return &server_error_; }
  bool errors_sized() const {
    return static_cast<int64_t>(worker_error_.size()) == padded() &&
           static_cast<int64_t>(server_error_.size()) == chunk_;
  }
  // Bytes one rank sends to other ranks per run(): 2 (world - 1) blocks of 4 (1 + chunk / 32).
  int64_t bytes_sent_per_call() const;

 private:
  Communicator& comm_;
  int world_ = 1, rank_ = 0;
  int64_t n_ = 0, chunk_ = 0, words_ = 0;  // words_: int32 words per block
  std::vector<float> worker_error_, server_error_, x_, y_;
  std::vector<uint8_t> all_bits_;
  Tensor send_, recv_, gathered_;
};

}  // namespace zt::comm
