// comm/compressed.h: 1-bit compressed all-reduce with error feedback, the communication of the
// 1-bit optimizers (OneBitAdam, ZeroOneAdam, OneBitLamb: optim/onebit.h).
//
// The scheme is DeepSpeed's compressed_allreduce (deepspeed/runtime/comm/mpi.py, nccl.py), from
// Tang et al. 2021, "1-bit Adam" (arXiv:2102.02888), Algorithm 1's two-phase error-compensated
// compression. Every rank is a worker for the whole buffer and the server of one chunk of it;
// for each piece of the buffer (below: one per tensor, or the whole buffer):
//   worker  x  = piece + worker_error                (padded, padding zeros)
//           s  = ||x||_2 / sqrt(padded size)         (one scale per piece)
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
// Scale granularity (DeepSpeed's). The buffer is cut into pieces (one per model tensor for
// OneBitAdam and ZeroOneAdam; one piece, the whole buffer, for OneBitLamb) and every piece is
// compressed on its own, as DeepSpeed's OnebitAdam and ZeroOneAdam call compressed_allreduce once
// per parameter (deepspeed/runtime/fp16/onebit/adam.py, zoadam.py: worker_error / server_error in
// each parameter's state) and OnebitLamb once on its fused momentum (lamb.py: exp_avg_flat).
// Piece t of n_t elements is padded to world x chunk_t, chunk_t = ceil(n_t / world) rounded up to
// a multiple of 8 (whole bytes of signs; DeepSpeed pads each tensor to a multiple of world x
// lcm(world, 8): the same padding at 1, 2, 4 and 8 ranks). So, as in DeepSpeed:
//   worker scale  one per piece per rank: ||x_t|| / sqrt(world chunk_t) over the padded piece;
//   server scale  one per piece per server chunk: ||y_t,r|| / sqrt(chunk_t);
// and the worker and server errors of a piece are that piece's alone. What differs: DeepSpeed
// runs 4 collectives per tensor (all_to_all of signs, all_gather of the scale, all_gather of
// signs, all_gather of the scale); here all pieces travel together in the same two collectives.
//
// Wire format. Let T = the number of pieces and C = sum_t chunk_t (a multiple of 8); the server
// part of rank r is chunk r of every piece (C elements). Every message is one block of
// words = T + ceil(C / 32) int32 words:
//   words [0, T)    the T scales' float bits, piece order;
//   then            the packed signs of chunk r of piece 0, of piece 1, ... (chunk_t / 8 bytes
//                   each, piece t's at byte offset sum_{t' < t} chunk_t' / 8 of the sign area),
//                   then zero bytes up to the whole word.
// Phase 1 is one all_to_all of world blocks (block r: the worker's scales and chunk r of its
// signs, to server r); phase 2 one all_gather of one block per rank (server r's scales and signs
// of its chunks). Per call a rank sends 2 (world - 1) blocks, about 2 (world - 1) (C / 8 + 4 T)
// bytes, against 2 (world - 1) C x 4 bytes for a ring all-reduce of the f32 buffer: 1/32 of the
// bytes plus 4 bytes per piece per peer per phase and the padding (bench/RESULTS.md).
// The error buffers are laid out piece by piece: worker_error = the padded pieces one after the
// other (world x C floats), server_error = this rank's chunks one after the other (C floats).
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
  // A compressed average of n-element f32 buffers over comm's ranks, the whole buffer one piece.
  // Collective in use (every rank calls run() in the same order), not in construction. comm must
  // outlive this object.
  CompressedAllReduce(Communicator& comm, int64_t n);
  // The same with the buffer cut into consecutive pieces of these sizes (n = their sum), each
  // with its own scales and errors (see "Scale granularity"). Pieces of size 0 are dropped; every
  // rank must pass the same sizes.
  CompressedAllReduce(Communicator& comm, const std::vector<int64_t>& pieces);

  // buf[0, n) on every rank -> the compressed average of the ranks' buffers (identical on every
  // rank). Blocks.
  void run(float* buf);

  // Zeroes both error buffers (DeepSpeed does it on checkpoint load, and 0/1 Adam when it switches
  // from compressing gradients to compressing accumulated momentum).
  void reset_errors();

  int64_t size() const { return n_; }
  int64_t pieces() const { return static_cast<int64_t>(size_.size()); }
  int64_t piece_size(int64_t t) const { return size_[static_cast<size_t>(t)]; }
  // Piece t's server chunk: a multiple of 8 elements, at least 8.
  int64_t chunk(int64_t t) const { return chunk_[static_cast<size_t>(t)]; }
  int64_t server_size() const { return server_; }      // C: this rank's part, all pieces
  int64_t padded() const { return server_ * world_; }  // the padded pieces, all of them
  int64_t words_per_block() const { return words_; }   // T + ceil(C / 32)
  const std::vector<float>& worker_error() const { return worker_error_; }  // padded() floats
  const std::vector<float>& server_error() const { return server_error_; }  // server_size()
  // For checkpoints (the optimizers' rank_state, optim/optimizer.h): the buffers themselves. A
  // caller that refills them must keep their sizes (errors_sized() checks it).
  std::vector<float>* mutable_worker_error() { return &worker_error_; }
  std::vector<float>* mutable_server_error() { return &server_error_; }
  bool errors_sized() const {
    return static_cast<int64_t>(worker_error_.size()) == padded() &&
           static_cast<int64_t>(server_error_.size()) == server_;
  }
  // Bytes one rank sends to other ranks per run(): 2 (world - 1) blocks of 4 words_per_block().
  int64_t bytes_sent_per_call() const;

 private:
  Communicator& comm_;
  int world_ = 1, rank_ = 0;
  int64_t n_ = 0, server_ = 0, words_ = 0;
  // Per piece: size, offset in buf, server chunk, offset of its chunk in the server part (C).
  std::vector<int64_t> size_, offset_, chunk_, coff_;
  std::vector<float> worker_error_, server_error_, x_, y_;
  std::vector<uint8_t> all_bits_;
  Tensor send_, recv_, gathered_;
};

}  // namespace zt::comm
