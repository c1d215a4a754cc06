// precision/convert.cpp: the buffer conversions of convert.h, one kernel set per Isa.
//
// Layout of this file: per-element helpers (scalar, from core/dtype.h), then the scalar, AVX2 and
// AVX-512 kernels, each a pair of templates (narrow: f32 -> 16-bit, widen: 16-bit -> f32 with an
// Op applied to the destination), then dispatch and threading. Every SIMD kernel runs its whole
// vectors and hands the remaining tail (< one vector) to the scalar kernel, so the tail code is
// the oracle itself.
#include "precision/convert.h"

#include "core/error.h"
#include "core/ops.h"
#include "precision/detail/parallel.h"

#include <cmath>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define ZT_PRECISION_AVX512 1
#else
#define ZT_PRECISION_AVX512 0
#endif
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define ZT_PRECISION_AVX2 1
#else
#define ZT_PRECISION_AVX2 0
#endif

namespace zt::precision {
namespace {

enum class Half { kF16, kBf16 };

// What a widening kernel does with the converted value v at dst[i]. Each is one IEEE operation,
// the same in the scalar and the SIMD code, so every implementation rounds the same way.
enum class Op {
  kSet,    // dst = v
  kScale,  // dst = alpha * v
  kAdd,    // dst = dst + v          (accumulate with alpha == 1)
  kFma,    // dst = fma(alpha, v, dst)
};

// ---- per element (the oracle: core/dtype.h) -----------------------------------------------------
template <Half H>
inline uint16_t narrow1(float x) {
  if constexpr (H == Half::kF16)
    return zt::f32_to_f16(x);
  else
    return zt::f32_to_bf16(x);
}
template <Half H>
inline float widen1(uint16_t h) {
  if constexpr (H == Half::kF16)
    return zt::f16_to_f32(h);
  else
    return zt::bf16_to_f32(h);
}
template <Op O>
inline void apply1(float v, float* d, float alpha) {
  if constexpr (O == Op::kSet)
    *d = v;
  else if constexpr (O == Op::kScale)
    *d = alpha * v;
  else if constexpr (O == Op::kAdd)
    *d = *d + v;
  else
    *d = std::fma(alpha, v, *d);
}

// ---- scalar kernels -----------------------------------------------------------------------------
template <Half H>
void narrow_scalar(const float* s, uint16_t* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = narrow1<H>(s[i]);
}
template <Half H, Op O>
void widen_scalar(const uint16_t* s, float* d, int64_t n, float alpha) {
  for (int64_t i = 0; i < n; ++i) apply1<O>(widen1<H>(s[i]), d + i, alpha);
}

// ---- AVX2 + F16C: 8 lanes -----------------------------------------------------------------------
#if ZT_PRECISION_AVX2
// f32 -> bf16 on 8 lanes, dtype.h's integer rounding: NaN -> (u >> 16) | 0x40 (quiet, sign and
// upper payload kept); otherwise u + 0x7fff + lsb(u >> 16), then the high half.
inline __m128i bf16_from_f32_avx2(__m256i u) {
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan =
      _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));  // abs >= 0: signed ok
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
  r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
  r = _mm256_srli_epi32(r, 16);  // each lane now 0..0xffff: the saturating pack below is exact
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

// f16 -> f32 on 8 lanes. vcvtph2ps is exact except that it quiets signalling NaNs; NaN lanes get
// dtype.h's answer instead: sign | 0x7f800000 | mantissa << 13.
inline __m256 f32_from_f16_avx2(__m128i h) {
  const __m256 f = _mm256_cvtph_ps(h);
  const __m256i w = _mm256_cvtepu16_epi32(h);
  const __m256i abs = _mm256_and_si256(w, _mm256_set1_epi32(0x7fff));
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7c00));
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x8000)), 16);
  const __m256i fix = _mm256_or_si256(
      sign, _mm256_add_epi32(_mm256_slli_epi32(abs, 13), _mm256_set1_epi32(0x70000000)));
  return _mm256_blendv_ps(f, _mm256_castsi256_ps(fix), _mm256_castsi256_ps(nan));
}

template <Half H>
void narrow_avx2(const float* s, uint16_t* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h;
    if constexpr (H == Half::kF16) {
      h = _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      h = bf16_from_f32_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
  }
  narrow_scalar<H>(s + i, d + i, n - i);
}

template <Half H, Op O>
void widen_avx2(const uint16_t* s, float* d, int64_t n, float alpha) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    __m256 v;
    if constexpr (H == Half::kF16)
      v = f32_from_f16_avx2(h);
    else
      v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    if constexpr (O == Op::kScale)
      v = _mm256_mul_ps(a, v);
    else if constexpr (O == Op::kAdd)
      v = _mm256_add_ps(_mm256_loadu_ps(d + i), v);
    else if constexpr (O == Op::kFma)
      v = _mm256_fmadd_ps(a, v, _mm256_loadu_ps(d + i));
    _mm256_storeu_ps(d + i, v);
  }
  widen_scalar<H, O>(s + i, d + i, n - i, alpha);
}
#endif  // ZT_PRECISION_AVX2

// ---- AVX-512F: 16 lanes -------------------------------------------------------------------------
#if ZT_PRECISION_AVX512
inline __m256i bf16_from_f32_avx512(__m512i u) {
  const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));  // vpmovdw: keep the low 16 bits
}

inline __m512 f32_from_f16_avx512(__m256i h) {
  const __m512 f = _mm512_cvtph_ps(h);
  const __m512i w = _mm512_cvtepu16_epi32(h);
  const __m512i abs = _mm512_and_si512(w, _mm512_set1_epi32(0x7fff));
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7c00));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x8000)), 16);
  const __m512i fix = _mm512_or_si512(
      sign, _mm512_add_epi32(_mm512_slli_epi32(abs, 13), _mm512_set1_epi32(0x70000000)));
  return _mm512_mask_mov_ps(f, nan, _mm512_castsi512_ps(fix));
}

template <Half H>
void narrow_avx512(const float* s, uint16_t* d, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i h;
    if constexpr (H == Half::kF16) {
      h = _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      h = bf16_from_f32_avx512(_mm512_loadu_si512(s + i));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), h);
  }
  narrow_scalar<H>(s + i, d + i, n - i);
}

template <Half H, Op O>
void widen_avx512(const uint16_t* s, float* d, int64_t n, float alpha) {
  const __m512 a = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    __m512 v;
    if constexpr (H == Half::kF16)
      v = f32_from_f16_avx512(h);
    else
      v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    if constexpr (O == Op::kScale)
      v = _mm512_mul_ps(a, v);
    else if constexpr (O == Op::kAdd)
      v = _mm512_add_ps(_mm512_loadu_ps(d + i), v);
    else if constexpr (O == Op::kFma)
      v = _mm512_fmadd_ps(a, v, _mm512_loadu_ps(d + i));
    _mm512_storeu_ps(d + i, v);
  }
  widen_scalar<H, O>(s + i, d + i, n - i, alpha);
}
#endif  // ZT_PRECISION_AVX512

// ---- dispatch -----------------------------------------------------------------------------------
Isa resolve(Isa isa) {
  if (isa == Isa::kAuto) return best_isa();
  for (Isa c : compiled_isas())
    if (c == isa) return isa;
  throw Error(::zt::detail::str_cat(
      "precision: the ", isa_name(isa),
      " conversion kernels are not compiled in this build (it "
      "targets a CPU without them; configure with -DZT_NATIVE=ON on a machine that has them)"));
}

template <Half H>
void narrow(const float* s, uint16_t* d, int64_t n, Isa isa) {
  ZT_CHECK(n >= 0, "precision: negative element count ", n);
  isa = resolve(isa);
  detail::for_each_chunk(n, [&](int64_t, int64_t lo, int64_t len) {
#if ZT_PRECISION_AVX512
    if (isa == Isa::kAvx512) return narrow_avx512<H>(s + lo, d + lo, len);
#endif
#if ZT_PRECISION_AVX2
    if (isa == Isa::kAvx2) return narrow_avx2<H>(s + lo, d + lo, len);
#endif
    narrow_scalar<H>(s + lo, d + lo, len);
  });
}

template <Half H, Op O>
void widen(const uint16_t* s, float* d, int64_t n, float alpha, Isa isa) {
  detail::for_each_chunk(n, [&](int64_t, int64_t lo, int64_t len) {
#if ZT_PRECISION_AVX512
    if (isa == Isa::kAvx512) return widen_avx512<H, O>(s + lo, d + lo, len, alpha);
#endif
#if ZT_PRECISION_AVX2
    if (isa == Isa::kAvx2) return widen_avx2<H, O>(s + lo, d + lo, len, alpha);
#endif
    widen_scalar<H, O>(s + lo, d + lo, len, alpha);
  });
}

// f32 source: the same Ops on plain floats (the compiler vectorizes these loops).
template <Op O>
void widen_f32(const float* s, float* d, int64_t n, float alpha) {
  detail::for_each_chunk(n, [&](int64_t, int64_t lo, int64_t len) {
    if constexpr (O == Op::kSet) {
      std::memcpy(d + lo, s + lo, static_cast<size_t>(len) * sizeof(float));
    } else {
      for (int64_t i = lo; i < lo + len; ++i) apply1<O>(s[i], d + i, alpha);
    }
  });
}

// Picks the Op for (accumulate?, alpha) and the kernel for the source dtype.
void widen_dispatch(const void* src, DType st, float* dst, int64_t n, float alpha, bool acc,
                    Isa isa, const char* what) {
  ZT_CHECK(n >= 0, "precision::", what, ": negative element count ", n);
  ZT_CHECK(st == DType::f32 || st == DType::f16 || st == DType::bf16, "precision::", what,
           ": source dtype must be f32, f16 or bf16, got ", dtype_name(st));
  isa = resolve(isa);
  const Op op = acc ? (alpha == 1.f ? Op::kAdd : Op::kFma) : (alpha == 1.f ? Op::kSet : Op::kScale);
  auto run = [&]<Op O>() {
    if (st == DType::f32) return widen_f32<O>(static_cast<const float*>(src), dst, n, alpha);
    const auto* s = static_cast<const uint16_t*>(src);
    if (st == DType::f16) return widen<Half::kF16, O>(s, dst, n, alpha, isa);
    widen<Half::kBf16, O>(s, dst, n, alpha, isa);
  };
  switch (op) {
    case Op::kSet:
      return run.template operator()<Op::kSet>();
    case Op::kScale:
      return run.template operator()<Op::kScale>();
    case Op::kAdd:
      return run.template operator()<Op::kAdd>();
    case Op::kFma:
      return run.template operator()<Op::kFma>();
  }
}

void check_cpu_pair(const Tensor& a, const Tensor& b, const char* what) {
  ZT_CHECK(a.defined() && b.defined(), "precision::", what, ": undefined tensor");
  ZT_CHECK(a.device().is_cpu() && b.device().is_cpu(), "precision::", what,
           ": CPU tensors only, got ", a.str(), " and ", b.str());
  ZT_CHECK(a.numel() == b.numel(), "precision::", what, ": element counts differ: ", a.str(),
           " vs ", b.str());
}

}  // namespace

void detail::widen_block_serial(const uint16_t* s, bool bf16, float* d, int64_t n) {
  auto run = [&]<Half H>() {
#if ZT_PRECISION_AVX512
    return widen_avx512<H, Op::kSet>(s, d, n, 1.f);
#elif ZT_PRECISION_AVX2
    return widen_avx2<H, Op::kSet>(s, d, n, 1.f);
#else
    return widen_scalar<H, Op::kSet>(s, d, n, 1.f);
#endif
  };
  if (bf16)
    run.template operator()<Half::kBf16>();
  else
    run.template operator()<Half::kF16>();
}

// ---- public API ---------------------------------------------------------------------------------
const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAuto:
      return "auto";
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

std::vector<Isa> compiled_isas() {
  std::vector<Isa> v{Isa::kScalar};
#if ZT_PRECISION_AVX2
  v.push_back(Isa::kAvx2);
#endif
#if ZT_PRECISION_AVX512
  v.push_back(Isa::kAvx512);
#endif
  return v;
}

Isa best_isa() {
  if (ZT_PRECISION_AVX512) return Isa::kAvx512;
  if (ZT_PRECISION_AVX2) return Isa::kAvx2;
  return Isa::kScalar;
}

void cast_f32_to_f16(const float* src, uint16_t* dst, int64_t n, Isa isa) {
  narrow<Half::kF16>(src, dst, n, isa);
}
void cast_f32_to_bf16(const float* src, uint16_t* dst, int64_t n, Isa isa) {
  narrow<Half::kBf16>(src, dst, n, isa);
}
void cast_f16_to_f32(const uint16_t* src, float* dst, int64_t n, Isa isa) {
  widen_dispatch(src, DType::f16, dst, n, 1.f, false, isa, "cast_f16_to_f32");
}
void cast_bf16_to_f32(const uint16_t* src, float* dst, int64_t n, Isa isa) {
  widen_dispatch(src, DType::bf16, dst, n, 1.f, false, isa, "cast_bf16_to_f32");
}

void copy_master_to_model(const float* master, void* model, DType dst_dtype, int64_t n, Isa isa) {
  switch (dst_dtype) {
    case DType::f32:
      ZT_CHECK(n >= 0, "precision::copy_master_to_model: negative element count ", n);
      return widen_f32<Op::kSet>(master, static_cast<float*>(model), n, 1.f);
    case DType::f16:
      return narrow<Half::kF16>(master, static_cast<uint16_t*>(model), n, isa);
    case DType::bf16:
      return narrow<Half::kBf16>(master, static_cast<uint16_t*>(model), n, isa);
    default:
      throw Error(
          ::zt::detail::str_cat("precision::copy_master_to_model: model dtype must be f32, f16 "
                                "or bf16, got ",
                                dtype_name(dst_dtype)));
  }
}

void widen_to_f32(const void* src, DType src_dtype, float* dst, int64_t n, float alpha, Isa isa) {
  widen_dispatch(src, src_dtype, dst, n, alpha, false, isa, "widen_to_f32");
}

void accumulate_to_f32(const void* src, DType src_dtype, float* dst, int64_t n, float alpha,
                       Isa isa) {
  widen_dispatch(src, src_dtype, dst, n, alpha, true, isa, "accumulate_to_f32");
}

// Both tensors on one GPU: the device casts of core/ops (round to nearest even, as dtype.h; a NaN
// stays NaN, its payload bits may differ), enqueued on the current stream.
static bool on_gpu(const Tensor& a, const Tensor& b, const char* what) {
  if (!(a.defined() && b.defined() && (a.device().is_cuda() || b.device().is_cuda())))
    return false;
  ZT_CHECK(a.device() == b.device(), "precision::", what, ": ", a.str(), " and ", b.str(),
           " are not on one device");
  ZT_CHECK(a.numel() == b.numel(), "precision::", what, ": element counts differ: ", a.str(),
           " vs ", b.str());
  return true;
}

void copy_master_to_model(const Tensor& master, Tensor& model) {
  if (on_gpu(master, model, "copy_master_to_model")) {
    ZT_CHECK(master.dtype() == DType::f32, "precision::copy_master_to_model: master ",
             master.str(), " is not f32");
    ops::copy(master, model);
    return;
  }
  check_cpu_pair(master, model, "copy_master_to_model");
  copy_master_to_model(master.data<float>(), model.raw(), model.dtype(), model.numel());
}

void widen_to_f32(const Tensor& src, Tensor& dst, float alpha) {
  if (on_gpu(src, dst, "widen_to_f32")) {
    ZT_CHECK(dst.dtype() == DType::f32, "precision::widen_to_f32: destination ", dst.str(),
             " is not f32");
    ops::copy(src, dst);                     // exact
    if (alpha != 1.f) ops::scale(dst, alpha);  // one rounding, as f32(src) * alpha on the CPU
    return;
  }
  check_cpu_pair(src, dst, "widen_to_f32");
  widen_to_f32(src.raw(), src.dtype(), dst.data<float>(), dst.numel(), alpha);
}

void accumulate_to_f32(const Tensor& src, Tensor& dst, float alpha) {
  check_cpu_pair(src, dst, "accumulate_to_f32");
  accumulate_to_f32(src.raw(), src.dtype(), dst.data<float>(), dst.numel(), alpha);
}

}  // namespace zt::precision
