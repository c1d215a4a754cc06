// tests/comm/test_compressed.cpp: sign packing (exact bits and order), all_to_all, and the 1-bit
// compressed all-reduce with error feedback (comm/compressed.h): identical results on every rank,
// a buffer cut into pieces (one per tensor) against a plain-code simulation of DeepSpeed's
// per-tensor scheme on all ranks (bit for bit) and against one all-reduce per piece, the wire
// format's size, and the average over T calls converging to the exact mean like 1/T. Runs at 1, 2
// and 4 ranks.
#include "comm/compressed.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "comm/comm_log.h"
#include "comm/communicator.h"
#include "core/tensor.h"

namespace zt::comm {
namespace {

Communicator& comm() {
  static std::unique_ptr<Communicator> c = make_mpi_communicator();
  return *c;
}

std::vector<float> random_vec(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(gen);
  return v;
}

// The comm log's bus factor for the compressed all-reduce's phase 1 (nccl-tests' alltoall).
TEST(CommLog, AllToAllBusFactor) {
  EXPECT_DOUBLE_EQ(busbw_factor("all_to_all", 4), 0.75);
  EXPECT_DOUBLE_EQ(busbw_factor("all_to_all", 1), 0.0);
}

// The plain scalar code the vectorized kernels replaced (comm/compressed.cpp before them): every
// version must give its bits.
void reference_pack(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < (n + 7) / 8; ++b) out[b] = 0;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] >= 0.f) out[i / 8] = static_cast<uint8_t>(out[i / 8] | (1u << (7 - i % 8)));
}
float reference_compress(float* x, float* error, int64_t n, uint8_t* bits) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] += error[i];
    ss += static_cast<double>(x[i]) * x[i];
  }
  const float s = n > 0 ? static_cast<float>(std::sqrt(ss / static_cast<double>(n))) : 0.f;
  for (int64_t i = 0; i < n; ++i) error[i] = x[i] - (x[i] >= 0.f ? s : -s);
  reference_pack(x, n, bits);
  return s;
}

TEST(PackSigns, VectorizedKernelsGiveTheScalarBits) {
  for (int64_t n : {0, 1, 7, 8, 9, 63, 64, 65, 127, 128, 1000, 4096 * 3 + 5, 100003}) {
    std::vector<float> x = random_vec(n, 11 + static_cast<uint32_t>(n));
    if (n > 5) {  // zeros of both signs count as +1, NaN as -1
      x[1] = 0.f;
      x[2] = -0.f;
      x[3] = std::nanf("");
    }
    std::vector<uint8_t> got(static_cast<size_t>((n + 7) / 8) + 1, 0xCD), want(got);
    pack_signs(x.data(), n, got.data());
    reference_pack(x.data(), n, want.data());
    EXPECT_EQ(got, want) << "pack, n = " << n;

    std::vector<float> out(static_cast<size_t>(n), 9.f), acc = random_vec(n, 5), acc_want = acc;
    unpack_signs(want.data(), n, 0.37f, out.data());
    accumulate_signs(want.data(), n, 0.37f, acc.data());
    bool same = true;
    for (int64_t i = 0; i < n; ++i) {
      const float v = (want[i / 8] >> (7 - i % 8)) & 1u ? 0.37f : -0.37f;
      same = same && out[i] == v && acc[i] == acc_want[i] + v;
    }
    EXPECT_TRUE(same) << "unpack / accumulate, n = " << n;

    std::vector<float> x1 = random_vec(n, 3), e1 = random_vec(n, 4);
    for (float& v : e1) v *= 0.1f;
    std::vector<float> x2 = x1, e2 = e1;
    std::vector<uint8_t> b1(got.size(), 0), b2(got.size(), 0);
    const float s1 = compress_with_feedback(x1.data(), e1.data(), n, b1.data());
    const float s2 = reference_compress(x2.data(), e2.data(), n, b2.data());
    EXPECT_EQ(s1, s2) << "scale, n = " << n;
    EXPECT_EQ(b1, b2) << "compressed signs, n = " << n;
    EXPECT_EQ(e1, e2) << "error feedback, n = " << n;
    EXPECT_EQ(x1, x2) << "compensated input, n = " << n;
  }
}

TEST(PackSigns, BitOrderIsMostSignificantFirst) {
  // + - - - - - - -  |  - + - + - + - +  | + + -   (tail of 3)
  const std::vector<float> x = {1.f,  -1.f, -2.f, -0.5f, -3.f, -1e-30f, -7.f, -1.f, -1.f, 2.f,
                                -1.f, 0.f,  -1.f, 3.f,   -1.f, 1.f,     0.f,  5.f,  -4.f};
  std::vector<uint8_t> bits(3, 0xAA);
  pack_signs(x.data(), static_cast<int64_t>(x.size()), bits.data());
  EXPECT_EQ(bits[0], 0x80);  // only element 0 positive: the top bit
  EXPECT_EQ(bits[1], 0x55);  // 0b01010101 (0.f counts as +1)
  EXPECT_EQ(bits[2], 0xC0);  // 0b110 then zero padding
  std::vector<float> back(x.size());
  unpack_signs(bits.data(), static_cast<int64_t>(x.size()), 0.5f, back.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(back[i], x[i] >= 0.f ? 0.5f : -0.5f) << i;
}

TEST(PackSigns, RoundTripEveryByteValue) {
  std::vector<uint8_t> all(256), again(256);
  for (int b = 0; b < 256; ++b) all[b] = static_cast<uint8_t>(b);
  std::vector<float> x(256 * 8);
  unpack_signs(all.data(), 256 * 8, 1.f, x.data());
  pack_signs(x.data(), 256 * 8, again.data());
  EXPECT_EQ(all, again);
}

TEST(CompressWithFeedback, ScaleAndErrorAreExact) {
  std::vector<float> x = {3.f, -4.f, 0.f, 1.f}, e = {0.f, 0.f, 1.f, -1.f};
  uint8_t bits = 0;
  // x + e = {3, -4, 1, 0}: norm 26^0.5, scale sqrt(26 / 4)
  const float s = compress_with_feedback(x.data(), e.data(), 4, &bits);
  EXPECT_FLOAT_EQ(s, std::sqrt(26.f / 4.f));
  EXPECT_EQ(bits, 0xB0);  // + - + + (0 is +)
  EXPECT_FLOAT_EQ(e[0], 3.f - s);
  EXPECT_FLOAT_EQ(e[1], -4.f + s);
  EXPECT_FLOAT_EQ(e[2], 1.f - s);
  EXPECT_FLOAT_EQ(e[3], 0.f - s);
}

TEST(AllToAll, ChunkRGoesToRankR) {
  Communicator& c = comm();
  const int w = c.world(), r = c.rank();
  const int n = 3;
  Tensor in = Tensor::empty({w * n}, DType::i32), out = Tensor::empty({w * n}, DType::i32);
  for (int d = 0; d < w; ++d)
    for (int j = 0; j < n; ++j) in.data<int32_t>()[d * n + j] = 1000 * r + 10 * d + j;
  c.all_to_all(in, out)->wait();
  for (int s = 0; s < w; ++s)
    for (int j = 0; j < n; ++j) EXPECT_EQ(out.data<int32_t>()[s * n + j], 1000 * s + 10 * r + j);
}

TEST(CompressedAllReduce, SameResultOnEveryRankAndSizes) {
  Communicator& c = comm();
  for (int64_t n : {1, 31, 1000, 4099}) {
    CompressedAllReduce car(c, n);
    EXPECT_EQ(car.pieces(), 1);
    EXPECT_EQ(car.chunk(0) % 8, 0);
    EXPECT_GE(car.padded(), n);
    std::vector<float> x = random_vec(n, 17u + static_cast<uint32_t>(c.rank()));
    car.run(x.data());
    // Every rank holds the same bits: compare with rank 0's by a broadcast.
    Tensor t = Tensor::from_vector(x, {n});
    Tensor t0 = t.clone();
    c.broadcast(t0, 0)->wait();
    int64_t diff = 0;
    for (int64_t i = 0; i < n; ++i) diff += t.data<float>()[i] != t0.data<float>()[i];
    EXPECT_EQ(diff, 0) << "n=" << n;
  }
}

// Pieces of very different sizes and magnitudes (a matrix, a bias, a one-element tensor...), the
// tails of every kernel included.
const std::vector<int64_t> kPieces = {1000, 37, 1, 64, 4099, 8};
int64_t total(const std::vector<int64_t>& pieces) {
  int64_t n = 0;
  for (int64_t k : pieces) n += k;
  return n;
}
// Rank q's input to call `call`: piece t scaled by 10^(t % 3 - 1) (one scale for all would fit
// none of them).
std::vector<float> piece_input(int q, int call) {
  std::vector<float> v = random_vec(
      total(kPieces), 1000u + 37u * static_cast<uint32_t>(q) + static_cast<uint32_t>(call));
  int64_t at = 0;
  for (size_t t = 0; t < kPieces.size(); ++t) {
    const float m = std::pow(10.f, static_cast<float>(static_cast<int>(t % 3) - 1));
    for (int64_t i = 0; i < kPieces[t]; ++i) v[at + i] *= m;
    at += kPieces[t];
  }
  return v;
}

TEST(CompressedAllReduce, WireFormatSizes) {
  Communicator& c = comm();
  const int w = c.world();
  CompressedAllReduce car(c, kPieces);
  ASSERT_EQ(car.pieces(), static_cast<int64_t>(kPieces.size()));
  int64_t server = 0;
  for (size_t t = 0; t < kPieces.size(); ++t) {
    // chunk = ceil(k / world) rounded up to a multiple of 8, at least 8
    const int64_t per = (kPieces[t] + w - 1) / w;
    EXPECT_EQ(car.chunk(static_cast<int64_t>(t)), std::max<int64_t>(8, (per + 7) / 8 * 8)) << t;
    server += car.chunk(static_cast<int64_t>(t));
  }
  EXPECT_EQ(car.size(), total(kPieces));
  EXPECT_EQ(car.server_size(), server);
  EXPECT_EQ(car.padded(), w * server);
  EXPECT_EQ(car.words_per_block(), static_cast<int64_t>(kPieces.size()) + (server + 31) / 32);
  EXPECT_EQ(car.bytes_sent_per_call(), 2 * (w - 1) * car.words_per_block() * 4);
  EXPECT_EQ(static_cast<int64_t>(car.worker_error().size()), car.padded());
  EXPECT_EQ(static_cast<int64_t>(car.server_error().size()), car.server_size());
  // Pieces of size 0 are dropped; none at all still makes a (signless) message.
  CompressedAllReduce sparse(c, std::vector<int64_t>{0, 5, 0});
  EXPECT_EQ(sparse.pieces(), 1);
  CompressedAllReduce empty(c, std::vector<int64_t>{});
  EXPECT_EQ(empty.pieces(), 1);
  std::vector<float> none(1, 3.f);
  empty.run(none.data());
  EXPECT_EQ(none[0], 3.f);
}

// DeepSpeed's per-tensor compressed_allreduce (deepspeed/runtime/comm/nccl.py, called per
// parameter by onebit/adam.py and zoadam.py) in plain scalar code, every rank simulated here: per
// piece, worker scale ||x|| / sqrt(padded) over the padded piece, server scale per chunk, errors
// per piece. The real run on every rank must give its bits, call after call.
TEST(CompressedAllReduce, PiecesAreDeepSpeedsPerTensorSchemeBitwise) {
  Communicator& c = comm();
  const int w = c.world();
  CompressedAllReduce car(c, kPieces);
  struct PieceState {
    int64_t k, chunk;
    std::vector<std::vector<float>> werr, serr;  // per rank
  };
  std::vector<PieceState> ps;
  for (int64_t k : kPieces) {
    const int64_t per = (k + w - 1) / w, ch = std::max<int64_t>(8, (per + 7) / 8 * 8);
    ps.push_back({k, ch, std::vector<std::vector<float>>(w, std::vector<float>(w * ch, 0.f)),
                  std::vector<std::vector<float>>(w, std::vector<float>(ch, 0.f))});
  }
  const float inv_world = 1.f / static_cast<float>(w);
  for (int call = 0; call < 4; ++call) {
    std::vector<std::vector<float>> in(w);
    for (int q = 0; q < w; ++q) in[q] = piece_input(q, call);
    std::vector<float> want(static_cast<size_t>(total(kPieces)));
    int64_t at = 0;
    for (PieceState& p : ps) {
      const int64_t P = w * p.chunk;
      std::vector<std::vector<uint8_t>> bits(w, std::vector<uint8_t>(P / 8));
      std::vector<float> scale(w);
      for (int q = 0; q < w; ++q) {
        std::vector<float> x(P, 0.f);
        std::copy(in[q].begin() + at, in[q].begin() + at + p.k, x.begin());
        scale[q] = reference_compress(x.data(), p.werr[q].data(), P, bits[q].data());
      }
      for (int r = 0; r < w; ++r) {  // server r
        std::vector<float> y(p.chunk, 0.f);
        for (int q = 0; q < w; ++q)
          for (int64_t i = 0; i < p.chunk; ++i) {
            const int64_t e = r * p.chunk + i;
            const float sq = scale[q] * inv_world;
            y[i] += (bits[q][e / 8] >> (7 - e % 8)) & 1u ? sq : -sq;
          }
        std::vector<uint8_t> sb(p.chunk / 8);
        const float s = reference_compress(y.data(), p.serr[r].data(), p.chunk, sb.data());
        for (int64_t i = 0; i < p.chunk && r * p.chunk + i < p.k; ++i)
          want[at + r * p.chunk + i] = (sb[i / 8] >> (7 - i % 8)) & 1u ? s : -s;
      }
      at += p.k;
    }
    std::vector<float> got = in[c.rank()];
    car.run(got.data());
    EXPECT_EQ(got, want) << "call " << call;
  }
  // The errors are the simulated rank's, piece by piece.
  std::vector<float> werr, serr;
  for (const PieceState& p : ps) {
    werr.insert(werr.end(), p.werr[c.rank()].begin(), p.werr[c.rank()].end());
    serr.insert(serr.end(), p.serr[c.rank()].begin(), p.serr[c.rank()].end());
  }
  EXPECT_EQ(car.worker_error(), werr);
  EXPECT_EQ(car.server_error(), serr);
}

// Pieces are independent: one all-reduce over all pieces gives, piece by piece, the bits of one
// single-piece all-reduce per piece (same inputs, same history).
TEST(CompressedAllReduce, EachPieceIsItsOwnAllReduce) {
  Communicator& c = comm();
  CompressedAllReduce all(c, kPieces);
  std::vector<std::unique_ptr<CompressedAllReduce>> one;
  for (int64_t k : kPieces) one.push_back(std::make_unique<CompressedAllReduce>(c, k));
  for (int call = 0; call < 3; ++call) {
    std::vector<float> a = piece_input(c.rank(), call), b = a;
    all.run(a.data());
    int64_t at = 0;
    for (size_t t = 0; t < kPieces.size(); ++t) {
      one[t]->run(b.data() + at);
      at += kPieces[t];
    }
    EXPECT_EQ(a, b) << "call " << call;
  }
}

// Error feedback: the sum of T outputs is T * mean plus the (bounded) final errors, so the average
// of T outputs approaches the exact mean like 1/T.
TEST(CompressedAllReduce, AverageOverCallsConvergesLikeOneOverT) {
  Communicator& c = comm();
  const int64_t n = 4096;
  const int w = c.world();
  std::vector<float> mine = random_vec(n, 100u + static_cast<uint32_t>(c.rank()));
  std::vector<double> mean(n, 0.0);
  for (int r = 0; r < w; ++r) {
    std::vector<float> xr = random_vec(n, 100u + static_cast<uint32_t>(r));
    for (int64_t i = 0; i < n; ++i) mean[i] += xr[i] / static_cast<double>(w);
  }
  double mean_norm = 0.0;
  for (double m : mean) mean_norm += m * m;
  mean_norm = std::sqrt(mean_norm);

  // Cut as a model is (a matrix, biases, a small tensor): each piece has its own scales.
  CompressedAllReduce car(c, std::vector<int64_t>{2048, 64, 1500, 480, 4});
  ASSERT_EQ(car.size(), n);
  std::vector<double> sum(n, 0.0);
  std::vector<float> buf(n);
  const std::vector<int> checkpoints = {1, 10, 100, 1000};
  std::vector<double> rel_err;
  for (int t = 1; t <= checkpoints.back(); ++t) {
    buf = mine;
    car.run(buf.data());
    for (int64_t i = 0; i < n; ++i) sum[i] += buf[i];
    if (std::find(checkpoints.begin(), checkpoints.end(), t) != checkpoints.end()) {
      double e = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = sum[i] / t - mean[i];
        e += d * d;
      }
      rel_err.push_back(std::sqrt(e) / mean_norm);
    }
  }
  if (c.rank() == 0)
    std::printf("[ compressed ] %d ranks, n=%lld: relative error of the mean of T calls: T=1 %.4f, "
                "T=10 %.5f, T=100 %.6f, T=1000 %.7f; T x error: %.3f %.3f %.3f %.3f\n",
                w, static_cast<long long>(n), rel_err[0], rel_err[1], rel_err[2], rel_err[3],
                rel_err[0], 10 * rel_err[1], 100 * rel_err[2], 1000 * rel_err[3]);
  // 1/T: once the error buffers have filled (a few dozen calls), T x error stays flat: measured
  // 3.4-3.8 at T = 100 and 3.8-4.3 at T = 1000 for 1-4 ranks, so 10x the calls give ~9x less
  // error. One 1-bit call alone is far off (sign x norm / sqrt(n): 65-92% relative error).
  EXPECT_GT(rel_err[0], 0.5);
  EXPECT_LT(1000 * rel_err[3], 1.5 * 100 * rel_err[2]);
  EXPECT_LT(rel_err[3], rel_err[2] / 6);
  EXPECT_LT(rel_err[3], 1e-2);
}

TEST(CompressedAllReduce, BytesAreAtMostOneSixteenthOfAllReduce) {
  Communicator& c = comm();
  const int w = c.world();
  const int64_t n = 1 << 20;
  // The whole buffer one piece, and cut like a GPT's tensors (per layer at width 128: 2 x 128
  // norm, 3 x 128^2 + 3 x 128 qkv, 128^2 + 128 proj, 2 x 4 x 128^2 + 4 x 128 + 128 mlp; filled
  // to n with a last piece).
  std::vector<int64_t> gpt;
  const int64_t d = 128;
  const std::vector<int64_t> layer = {d, d, 3 * d * d, 3 * d, d * d, d, d, d, 4 * d * d, 4 * d,
                                      4 * d * d, d};
  for (int64_t left = n; left > 0;)
    for (int64_t k : layer) {
      if (left == 0) break;
      gpt.push_back(std::min(k, left));
      left -= gpt.back();
    }
  const double ring = 2.0 * (w - 1) / w * 4.0 * static_cast<double>(n);
  for (const std::vector<int64_t>& pieces : {std::vector<int64_t>{n}, gpt}) {
    CompressedAllReduce car(c, pieces);
    if (w > 1) {
      EXPECT_LE(static_cast<double>(car.bytes_sent_per_call()), ring / 16) << car.pieces();
      // 1/32 plus a scale per piece per block and the padding
      EXPECT_NEAR(static_cast<double>(car.bytes_sent_per_call()) / ring, 1.0 / 32, 1e-3)
          << car.pieces();
    } else {
      EXPECT_EQ(car.bytes_sent_per_call(), 0);
    }
  }
}

TEST(CompressedAllReduce, ResetErrorsZeroesBoth) {
  Communicator& c = comm();
  CompressedAllReduce car(c, 100);
  std::vector<float> x = random_vec(100, 5u + static_cast<uint32_t>(c.rank()));
  car.run(x.data());
  car.reset_errors();
  for (float e : car.worker_error()) EXPECT_EQ(e, 0.f);
  for (float e : car.server_error()) EXPECT_EQ(e, 0.f);
}

}  // namespace
}  // namespace zt::comm
