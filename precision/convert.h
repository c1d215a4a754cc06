// precision/convert.h: buffer conversions between f32 and the 16-bit floats (f16, bf16), the casts
// of mixed-precision training: fp32 master weights -> 16-bit model weights after every optimizer
// step, and 16-bit gradients -> fp32 (copy or accumulate) before it.
//
// Every function here agrees bit for bit with the scalar conversions of core/dtype.h (round to
// nearest even, subnormals kept, overflow to inf, NaN stays a NaN with its sign and payload kept as
// dtype.h keeps it) on every implementation; tests/precision/test_convert.cpp checks all 65536
// 16-bit patterns and ~50M f32 patterns. The implementations (Isa):
//   kScalar  the loops of dtype.h; always compiled.
//   kAvx2    F16C (_mm256_cvtps_ph / _mm256_cvtph_ps) for f16, 8-lane integer code for bf16;
//            compiled when the target has AVX2 and F16C.
//   kAvx512  _mm512_cvtps_ph / _mm512_cvtph_ps for f16, 16-lane integer code for bf16; compiled
//            when the target has AVX-512F (zerotrain builds with -march=native, see ZT_NATIVE).
// Two hardware shortcuts are *not* taken, because they disagree with dtype.h:
//   - vcvtph2ps (f16 -> f32) quiets a signalling NaN (sets the quiet bit); NaN lanes are patched.
//   - AVX512_BF16's vcvtneps2bf16 flushes f32 subnormals to zero; bf16 uses the integer
//     round-to-nearest-even trick of dtype.h instead (add 0x7fff + lsb, keep the high half).
// Large buffers are split into fixed chunks run by OpenMP threads; each output element depends on
// its input element only, so the result is the same for every thread count.
//
// Pointers may be unaligned; source and destination must not overlap. n == 0 is a no-op.
#pragma once

#include "core/dtype.h"
#include "core/tensor.h"

#include <cstdint>
#include <vector>

namespace zt::precision {

// ---- implementations ----------------------------------------------------------------------------
enum class Isa : uint8_t { kAuto, kScalar, kAvx2, kAvx512 };
const char* isa_name(Isa isa);     // "auto", "scalar", "avx2", "avx512"
Isa best_isa();                    // what kAuto runs: the widest one compiled
std::vector<Isa> compiled_isas();  // every one this build can run, kScalar first

// ---- plain conversions --------------------------------------------------------------------------
void cast_f32_to_f16(const float* src, uint16_t* dst, int64_t n, Isa isa = Isa::kAuto);
void cast_f32_to_bf16(const float* src, uint16_t* dst, int64_t n, Isa isa = Isa::kAuto);
void cast_f16_to_f32(const uint16_t* src, float* dst, int64_t n, Isa isa = Isa::kAuto);
void cast_bf16_to_f32(const uint16_t* src, float* dst, int64_t n, Isa isa = Isa::kAuto);

// ---- the mixed-precision steps (dtype-dispatched: f32, f16 or bf16 on the 16-bit side)
// ----------- Master -> model weights: dst (of dtype `dst_dtype`) = round(src). f32 dst is a plain
// copy.
void copy_master_to_model(const float* master, void* model, DType dst_dtype, int64_t n,
                          Isa isa = Isa::kAuto);

// Gradients -> fp32: dst = alpha * f32(src). With alpha == 1 this is the exact conversion (no
// multiply, so even NaN payloads are kept); otherwise one rounding (the product).
void widen_to_f32(const void* src, DType src_dtype, float* dst, int64_t n, float alpha = 1.f,
                  Isa isa = Isa::kAuto);

// Gradient accumulation: dst += alpha * f32(src), one rounding per element (a fused multiply-add;
// with alpha == 1 that is the plain sum). Results equal the scalar std::fma(alpha, x, dst) for
// every finite or infinite value; NaN results are NaN (their payload may depend on the
// implementation).
void accumulate_to_f32(const void* src, DType src_dtype, float* dst, int64_t n, float alpha = 1.f,
                       Isa isa = Isa::kAuto);

// ---- Tensor forms (same numel; dtypes as above) -----------------------------------------------
// CPU tensors; copy_master_to_model and widen_to_f32 also take two tensors on one GPU (the cast
// kernels of core/cuda, enqueued on the current stream; same rounding, NaN payloads may differ).
void copy_master_to_model(const Tensor& master, Tensor& model);
void widen_to_f32(const Tensor& src, Tensor& dst, float alpha = 1.f);
void accumulate_to_f32(const Tensor& src, Tensor& dst, float alpha = 1.f);

}  // namespace zt::precision
