// comm/compressed.cpp: sign packing and the two-phase compressed all-reduce (comm/compressed.h
// has the scheme, the bit order and the wire format).
#include "comm/compressed.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "comm/communicator.h"
#include "core/error.h"
#include "core/tensor.h"

namespace zt::comm {

void pack_signs(const float* x, int64_t n, uint8_t* out) {
  const int64_t full = n / 8;
  for (int64_t b = 0; b < full; ++b) {
    const float* v = x + 8 * b;
    uint8_t byte = 0;
    for (int j = 0; j < 8; ++j) byte |= static_cast<uint8_t>((v[j] >= 0.f ? 1u : 0u) << (7 - j));
    out[b] = byte;
  }
  if (full * 8 < n) {
    uint8_t byte = 0;
    for (int64_t i = full * 8; i < n; ++i)
      byte |= static_cast<uint8_t>((x[i] >= 0.f ? 1u : 0u) << (7 - (i - full * 8)));
    out[full] = byte;
  }
}

void unpack_signs(const uint8_t* bits, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = (bits[i >> 3] >> (7 - (i & 7))) & 1u ? scale : -scale;
}

float compress_with_feedback(float* x, float* error, int64_t n, uint8_t* bits) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] += error[i];
    ss += static_cast<double>(x[i]) * x[i];
  }
  const float s = n > 0 ? static_cast<float>(std::sqrt(ss / static_cast<double>(n))) : 0.f;
  for (int64_t i = 0; i < n; ++i) error[i] = x[i] - (x[i] >= 0.f ? s : -s);
  pack_signs(x, n, bits);
  return s;
}

CompressedAllReduce::CompressedAllReduce(Communicator& comm, int64_t n)
    : comm_(comm), world_(comm.world()), rank_(comm.rank()), n_(n) {
  ZT_CHECK(n >= 0, "CompressedAllReduce: negative size ", n);
  // chunk: ceil(n / world) rounded up to a multiple of 32 (whole int32 words of signs), at least 32
  const int64_t per = (n + world_ - 1) / world_;
  chunk_ = std::max<int64_t>(32, (per + 31) / 32 * 32);
  words_ = 1 + chunk_ / 32;
  worker_error_.assign(static_cast<size_t>(padded()), 0.f);
  server_error_.assign(static_cast<size_t>(chunk_), 0.f);
  x_.assign(static_cast<size_t>(padded()), 0.f);
  y_.assign(static_cast<size_t>(chunk_), 0.f);
}

void CompressedAllReduce::reset_errors() {
  std::fill(worker_error_.begin(), worker_error_.end(), 0.f);
  std::fill(server_error_.begin(), server_error_.end(), 0.f);
}

int64_t CompressedAllReduce::bytes_sent_per_call() const {
  return 2 * static_cast<int64_t>(world_ - 1) * words_ * 4;
}

namespace {
// A block: word 0 holds the scale's bits, words 1.. the packed signs.
void put_scale(int32_t* block, float s) { std::memcpy(block, &s, sizeof s); }
float get_scale(const int32_t* block) {
  float s;
  std::memcpy(&s, block, sizeof s);
  return s;
}
uint8_t* sign_bytes(int32_t* block) { return reinterpret_cast<uint8_t*>(block + 1); }
}  // namespace

void CompressedAllReduce::run(float* buf) {
  const int64_t P = padded();
  // Worker: compensate, compress the whole buffer with one scale, cut the signs into chunks.
  std::copy(buf, buf + n_, x_.begin());
  std::fill(x_.begin() + n_, x_.end(), 0.f);
  Tensor send = Tensor::empty({world_ * words_}, DType::i32);
  Tensor recv = Tensor::empty({world_ * words_}, DType::i32);
  int32_t* sb = send.data<int32_t>();
  // The signs of the whole buffer are packed in place block after block: chunk r's signs start
  // at block r's word 1 (chunk is a multiple of 32, so chunks never share a byte).
  std::vector<uint8_t> all_bits(static_cast<size_t>(P / 8));
  const float s = compress_with_feedback(x_.data(), worker_error_.data(), P, all_bits.data());
  for (int r = 0; r < world_; ++r) {
    int32_t* block = sb + r * words_;
    put_scale(block, s);
    std::memcpy(sign_bytes(block), all_bits.data() + r * chunk_ / 8,
                static_cast<size_t>(chunk_ / 8));
  }
  comm_.all_to_all(send, recv)->wait();  // phase 1: rank r gets chunk r of every worker

  // Server: average the decompressed chunks of all workers, compensate, recompress.
  const int32_t* rb = recv.data<int32_t>();
  std::fill(y_.begin(), y_.end(), 0.f);
  const float inv_world = 1.f / static_cast<float>(world_);
  for (int r = 0; r < world_; ++r) {
    const int32_t* block = rb + r * words_;
    const float sr = get_scale(block) * inv_world;
    const uint8_t* bits = reinterpret_cast<const uint8_t*>(block + 1);
    for (int64_t i = 0; i < chunk_; ++i) y_[i] += (bits[i >> 3] >> (7 - (i & 7))) & 1u ? sr : -sr;
  }
  Tensor gathered = Tensor::empty({world_ * words_}, DType::i32);
  int32_t* own = gathered.data<int32_t>() + rank_ * words_;
  put_scale(own, compress_with_feedback(y_.data(), server_error_.data(), chunk_, sign_bytes(own)));
  Tensor own_t = gathered.flat_view(rank_ * words_, {words_});
  comm_.all_gather(own_t, gathered)->wait();  // phase 2: every rank gets every server's chunk

  // Everyone: decompress the servers' chunks into buf (the padding is dropped).
  const int32_t* gb = gathered.data<int32_t>();
  for (int r = 0; r < world_; ++r) {
    const int64_t lo = r * chunk_;
    if (lo >= n_) break;
    const int32_t* block = gb + r * words_;
    unpack_signs(reinterpret_cast<const uint8_t*>(block + 1), std::min(chunk_, n_ - lo),
                 get_scale(block), buf + lo);
  }
}

}  // namespace zt::comm
