// comm/compressed.cpp: sign packing and the two-phase compressed all-reduce (comm/compressed.h
// has the scheme, the bit order and the wire format).
#include "comm/compressed.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "comm/communicator.h"
#include "core/error.h"
#include "core/tensor.h"

namespace zt::comm {
namespace {

// Versions of the kernels, chosen at compile time from the target (as optim/adam.cpp does): 64
// elements per step, whose 64 sign bits form one little-endian uint64 (byte k = elements
// 8k..8k+7). AVX-512: compare masks of 16 lanes; AVX2: movemask of 8 lanes; otherwise plain
// loops. The comparison (x >= 0, false for NaN), the stored values (exactly +-scale, x - +-s,
// y + +-s) and so the bits are those of the plain scalar code in every version; the tail (< 64
// elements) takes the scalar path. Only compress's sum of squares is reordered (see there).
constexpr int64_t kBlock = 64;

// The hardware masks put element j at bit j; the wire wants element 0 of each byte at bit 7:
// reverse the bits inside each byte.
inline uint64_t reverse_bits_in_bytes(uint64_t m) {
  m = ((m >> 1) & 0x5555555555555555ull) | ((m & 0x5555555555555555ull) << 1);
  m = ((m >> 2) & 0x3333333333333333ull) | ((m & 0x3333333333333333ull) << 2);
  m = ((m >> 4) & 0x0F0F0F0F0F0F0F0Full) | ((m & 0x0F0F0F0F0F0F0F0Full) << 4);
  return m;
}

// Bit j set where x[j] >= 0, j in [0, 64).
inline uint64_t sign_mask64(const float* x) {
#if defined(__AVX512F__)
  const __m512 z = _mm512_setzero_ps();
  uint64_t m = 0;
  for (int k = 0; k < 4; ++k)
    m |= static_cast<uint64_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(x + 16 * k), z, _CMP_GE_OQ))
         << (16 * k);
  return m;
#elif defined(__AVX2__)
  const __m256 z = _mm256_setzero_ps();
  uint64_t m = 0;
  for (int k = 0; k < 8; ++k)
    m |= static_cast<uint64_t>(static_cast<uint32_t>(
             _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + 8 * k), z, _CMP_GE_OQ))))
         << (8 * k);
  return m;
#else
  uint64_t m = 0;
  for (int j = 0; j < 64; ++j) m |= static_cast<uint64_t>(x[j] >= 0.f ? 1u : 0u) << j;
  return m;
#endif
}

// out[j] = (bit j of m) ? pos : -pos, or (accumulate) out[j] += that, j in [0, 64).
template <bool kAccumulate>
inline void expand_mask64(uint64_t m, float pos, float* out) {
#if defined(__AVX512F__)
  const __m512 p = _mm512_set1_ps(pos), q = _mm512_set1_ps(-pos);
  for (int k = 0; k < 4; ++k) {
    const __m512 v = _mm512_mask_blend_ps(static_cast<__mmask16>(m >> (16 * k)), q, p);
    float* o = out + 16 * k;
    _mm512_storeu_ps(o, kAccumulate ? _mm512_add_ps(_mm512_loadu_ps(o), v) : v);
  }
#elif defined(__AVX2__)
  // Lane j of byte b's vector: all ones where bit j of b is set.
  const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 p = _mm256_set1_ps(pos), q = _mm256_set1_ps(-pos);
  for (int k = 0; k < 8; ++k) {
    const __m256i b = _mm256_set1_epi32(static_cast<int>((m >> (8 * k)) & 0xFF));
    const __m256 sel =
        _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, lane_bits), lane_bits));
    const __m256 v = _mm256_blendv_ps(q, p, sel);
    float* o = out + 8 * k;
    _mm256_storeu_ps(o, kAccumulate ? _mm256_add_ps(_mm256_loadu_ps(o), v) : v);
  }
#else
  for (int j = 0; j < 64; ++j) {
    const float v = (m >> j) & 1u ? pos : -pos;
    out[j] = kAccumulate ? out[j] + v : v;
  }
#endif
}

inline uint64_t load_mask64(const uint8_t* bits) {
  uint64_t m;
  std::memcpy(&m, bits, 8);
  return reverse_bits_in_bytes(m);
}

// The scalar reference of one element (tails).
inline float signed_scale(const uint8_t* bits, int64_t i, float scale) {
  return (bits[i >> 3] >> (7 - (i & 7))) & 1u ? scale : -scale;
}

template <bool kAccumulate>
void expand_signs(const uint8_t* bits, int64_t n, float scale, float* out) {
  const int64_t full = n / kBlock * kBlock;
  for (int64_t i = 0; i < full; i += kBlock)
    expand_mask64<kAccumulate>(load_mask64(bits + i / 8), scale, out + i);
  for (int64_t i = full; i < n; ++i)
    out[i] = kAccumulate ? out[i] + signed_scale(bits, i, scale) : signed_scale(bits, i, scale);
}

// x += error over [0, n) and the sum of x^2 in double. The sum is cut into fixed chunks of
// kSumChunk elements, each summed in 8 double lanes (elements i = 8q + l go to lane l, in order),
// the lanes of a chunk added pairwise and the chunks in order: the same bits on every machine
// version and thread count (the lanes are fixed by the code, not by the vector width). It differs
// from a plain sequential double sum only below double resolution, 2^-29 of a float ulp: the
// float scale sqrt(sum / n) is the same except in a rare exact tie.
constexpr int64_t kSumChunk = 1 << 12;
double compensate_chunk(float* x, const float* error, int64_t n) {
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t full = n / 8 * 8;
#if defined(__AVX512F__)
  __m512d acc = _mm512_setzero_pd();
  for (int64_t i = 0; i < full; i += 8) {
    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(error + i));
    _mm256_storeu_ps(x + i, v);
    const __m512d d = _mm512_cvtps_pd(v);
    acc = _mm512_add_pd(acc, _mm512_mul_pd(d, d));  // no fma: keep the scalar code's rounding
  }
  _mm512_storeu_pd(lane, acc);
#elif defined(__AVX2__)
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  for (int64_t i = 0; i < full; i += 8) {
    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(error + i));
    _mm256_storeu_ps(x + i, v);
    const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
    hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
  }
  _mm256_storeu_pd(lane, lo);
  _mm256_storeu_pd(lane + 4, hi);
#else
  for (int64_t i = 0; i < full; ++i) {
    x[i] += error[i];
    const double d = x[i];
    lane[i & 7] = lane[i & 7] + d * d;
  }
#endif
  for (int64_t i = full; i < n; ++i) {  // the tail into the lanes, in order
    x[i] += error[i];
    const double d = x[i];
    lane[i - full] = lane[i - full] + d * d;
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

void pack_signs(const float* x, int64_t n, uint8_t* out) {
  const int64_t blocks = n / kBlock;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint64_t m = reverse_bits_in_bytes(sign_mask64(x + b * kBlock));
    std::memcpy(out + b * 8, &m, 8);
  }
  // The tail: whole bytes, then a last partial byte whose unused low bits are 0.
  const int64_t done = blocks * kBlock, full = n / 8;
  for (int64_t b = done / 8; b < full; ++b) {
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
  expand_signs<false>(bits, n, scale, out);
}

void accumulate_signs(const uint8_t* bits, int64_t n, float scale, float* out) {
  expand_signs<true>(bits, n, scale, out);
}

float compress_with_feedback(float* x, float* error, int64_t n, uint8_t* bits) {
  double ss = 0.0;
  for (int64_t c = 0; c < n; c += kSumChunk)
    ss += compensate_chunk(x + c, error + c, std::min(kSumChunk, n - c));
  const float s = n > 0 ? static_cast<float>(std::sqrt(ss / static_cast<double>(n))) : 0.f;
  // error = x - s sign(x), and the signs packed, in one pass per 64 elements.
  const int64_t blocks = n / kBlock;
#if defined(__AVX512F__)
  const __m512 ps = _mm512_set1_ps(s), ns = _mm512_set1_ps(-s), z = _mm512_setzero_ps();
#endif
  for (int64_t b = 0; b < blocks; ++b) {
    float* xv = x + b * kBlock;
    float* ev = error + b * kBlock;
#if defined(__AVX512F__)
    uint64_t m = 0;
    for (int k = 0; k < 4; ++k) {
      const __m512 v = _mm512_loadu_ps(xv + 16 * k);
      const __mmask16 mk = _mm512_cmp_ps_mask(v, z, _CMP_GE_OQ);
      _mm512_storeu_ps(ev + 16 * k, _mm512_sub_ps(v, _mm512_mask_blend_ps(mk, ns, ps)));
      m |= static_cast<uint64_t>(mk) << (16 * k);
    }
#else
    const uint64_t m = sign_mask64(xv);
    for (int j = 0; j < 64; ++j) ev[j] = xv[j] - ((m >> j) & 1u ? s : -s);
#endif
    const uint64_t r = reverse_bits_in_bytes(m);
    std::memcpy(bits + b * 8, &r, 8);
  }
  const int64_t done = blocks * kBlock;
  for (int64_t i = done; i < n; ++i) error[i] = x[i] - (x[i] >= 0.f ? s : -s);
  if (done < n) pack_signs(x + done, n - done, bits + done / 8);  // done is a multiple of 8
  return s;
}

CompressedAllReduce::CompressedAllReduce(Communicator& comm, int64_t n)
    : CompressedAllReduce(comm, std::vector<int64_t>{n}) {}

CompressedAllReduce::CompressedAllReduce(Communicator& comm, const std::vector<int64_t>& pieces)
    : comm_(comm), world_(comm.world()), rank_(comm.rank()) {
  for (int64_t k : pieces) {
    ZT_CHECK(k >= 0, "CompressedAllReduce: negative piece size ", k);
    if (k > 0) size_.push_back(k);
  }
  if (size_.empty()) size_.push_back(0);  // nothing to send but the collectives still run
  for (int64_t k : size_) {
    // chunk: ceil(k / world) rounded up to a multiple of 8 (whole bytes of signs), at least 8
    const int64_t per = (k + world_ - 1) / world_;
    const int64_t chunk = std::max<int64_t>(8, (per + 7) / 8 * 8);
    offset_.push_back(n_);
    coff_.push_back(server_);
    chunk_.push_back(chunk);
    n_ += k;
    server_ += chunk;
  }
  words_ = static_cast<int64_t>(size_.size()) + (server_ + 31) / 32;
  worker_error_.assign(static_cast<size_t>(padded()), 0.f);
  server_error_.assign(static_cast<size_t>(server_), 0.f);
  x_.assign(static_cast<size_t>(padded()), 0.f);
  y_.assign(static_cast<size_t>(server_), 0.f);
  // The message buffers, reused by every run() (allocating them per call cost page faults). Zeros:
  // the bytes after the last piece's signs are never written and go out as zeros.
  all_bits_.assign(static_cast<size_t>(padded() / 8), 0);
  send_ = Tensor::zeros({world_ * words_}, DType::i32);
  recv_ = Tensor::zeros({world_ * words_}, DType::i32);
  gathered_ = Tensor::zeros({world_ * words_}, DType::i32);
}

void CompressedAllReduce::reset_errors() {
  std::fill(worker_error_.begin(), worker_error_.end(), 0.f);
  std::fill(server_error_.begin(), server_error_.end(), 0.f);
}

int64_t CompressedAllReduce::bytes_sent_per_call() const {
  return 2 * static_cast<int64_t>(world_ - 1) * words_ * 4;
}

namespace {
// A block: words [0, T) hold the pieces' scales, the words after them the packed signs.
void put_scale(int32_t* block, int64_t t, float s) { std::memcpy(block + t, &s, sizeof s); }
float get_scale(const int32_t* block, int64_t t) {
  float s;
  std::memcpy(&s, block + t, sizeof s);
  return s;
}
}  // namespace

void CompressedAllReduce::run(float* buf) {
  const int64_t T = pieces();
  int32_t* sb = send_.data<int32_t>();
  const auto signs = [T](int32_t* block) { return reinterpret_cast<uint8_t*>(block + T); };
  const auto csigns = [T](const int32_t* block) {
    return reinterpret_cast<const uint8_t*>(block + T);
  };
  // Worker: per piece, compensate and compress the padded piece with its own scale, then cut its
  // signs into the world chunks: chunk r of piece t goes to block r at the piece's byte offset
  // (chunks are whole bytes, so they never share one).
  for (int64_t t = 0; t < T; ++t) {
    const int64_t k = size_[t], c = chunk_[t], at = world_ * coff_[t];
    float* x = x_.data() + at;
    std::copy(buf + offset_[t], buf + offset_[t] + k, x);
    std::fill(x + k, x + world_ * c, 0.f);
    uint8_t* bits = all_bits_.data() + at / 8;
    const float s = compress_with_feedback(x, worker_error_.data() + at, world_ * c, bits);
    for (int r = 0; r < world_; ++r) {
      int32_t* block = sb + r * words_;
      put_scale(block, t, s);
      std::memcpy(signs(block) + coff_[t] / 8, bits + r * c / 8, static_cast<size_t>(c / 8));
    }
  }
  comm_.all_to_all(send_, recv_)->wait();  // phase 1: rank r gets chunk r of every worker

  // Server: per piece, average the decompressed chunks of all workers, compensate, recompress.
  const int32_t* rb = recv_.data<int32_t>();
  int32_t* own = gathered_.data<int32_t>() + rank_ * words_;
  const float inv_world = 1.f / static_cast<float>(world_);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t c = chunk_[t], o = coff_[t];
    float* y = y_.data() + o;
    std::fill(y, y + c, 0.f);
    for (int r = 0; r < world_; ++r) {
      const int32_t* block = rb + r * words_;
      accumulate_signs(csigns(block) + o / 8, c, get_scale(block, t) * inv_world, y);
    }
    put_scale(own, t, compress_with_feedback(y, server_error_.data() + o, c, signs(own) + o / 8));
  }
  Tensor own_t = gathered_.flat_view(rank_ * words_, {words_});
  comm_.all_gather(own_t, gathered_)->wait();  // phase 2: every rank gets every server's chunks

  // Everyone: decompress chunk r of every piece from server r's block (the padding is dropped).
  const int32_t* gb = gathered_.data<int32_t>();
  for (int r = 0; r < world_; ++r) {
    const int32_t* block = gb + r * words_;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t c = chunk_[t], lo = r * c;
      if (lo >= size_[t]) continue;
      unpack_signs(csigns(block) + coff_[t] / 8, std::min(c, size_[t] - lo), get_scale(block, t),
                   buf + offset_[t] + lo);
    }
  }
}

}  // namespace zt::comm
