// optim/adam.cpp: Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019) over a flat fp32
// span, with DeepSpeed's parameter names and its `adam_w_mode` switch (DeepSpeedCPUAdam/FusedAdam):
//   g' = g + wd * p                     (adam_w_mode = false: L2 into the gradient)
//   m  = b1 m + (1 - b1) g'
//   v  = b2 v + (1 - b2) g'^2
//   p -= lr * wd * p                    (adam_w_mode = true: decoupled decay)
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_i = 1 - b_i^t (1 with no correction)
//
// The rounding is pinned down exactly (every version below gives the same bits for any thread
// count; checked with GCC 12 at -march=native, x86-64-v3 and plain x86-64), per parameter, in
// fp32, with fma = one rounding:
//   g' = fma(l2, p, g)                  l2 = wd in L2 mode, else 0
//   m  = fma(b1, m, (1 - b1) * g')
//   v  = fma(b2, v, ((1 - b2) * g') * g')
//   p  = p * decoupled - (step_size * m) / fma(sqrt(v), inv_sqrt_bc2, eps)
// with decoupled = fma(-lr, wd, 1) in AdamW mode (else 1), step_size = lr / bc1 and inv_sqrt_bc2
// = 1 / sqrt(bc2) (in double, then rounded). sqrt and the division are IEEE (correctly rounded) in
// every version: no rsqrt or reciprocal approximations, which would change the results. This is
// the order GCC had chosen for the earlier plain loop under -march=native, so the results of
// existing runs did not change (apps/bench_optim's checksum of p, m, v is the same).
//
// The step is one pass over p, g, m, v: it reads 16 and writes 12 bytes per parameter and is
// bound by memory bandwidth once the span outgrows the caches (apps/bench_optim measures it next
// to the machine's stream bandwidth; bench/optim_vs_torch.sh next to PyTorch's AdamW). Versions
// of the inner loop, chosen at compile time from what the target has:
//   - update_avx512: 16 lanes, FMA, four vectors per iteration; the tail (< 16) with masked loads
//     and stores, so every parameter goes through the same instructions. The default with
//     -march=native on AVX-512 machines (Zen 4, Sapphire Rapids).
//   - update_avx2: the same with 8 lanes (one vector per iteration), for AVX2 machines.
//   - update_scalar: the formulas above in plain C++ (std::fma), for other targets.
// Why explicit intrinsics: GCC does not vectorize a loop calling std::sqrt (it may set errno), so
// the earlier `omp simd` loop compiled to scalar code: 0.34 G params/s on one Zen 4 core at 64M
// parameters, against 1.4-1.8 G params/s (the memory limit) now, and ~3 G params/s from cache.
// Tried and dropped (measured on the Zen 4 VM, 1 and 2 threads): non-temporal stores (20-40%
// slower: p, m, v lines were just read, so plain stores cost no extra read, and they would need
// 64-byte alignment that m and v, std::vectors, do not have); software prefetch and block-wise
// prefetch (no gain, or slower); huge pages for m and v (no measurable change).
// Threads: the segment is cut into fixed chunks of kChunk parameters (a chunk's position never
// depends on the thread count, so the bits do not either) handed out statically. From DRAM two
// threads gain 10-30% over one (the memory system is the limit), from cache about 2x.
//
// On a GPU (step_tensors with CUDA tensors) the same update runs as one fused kernel,
// core/cuda/optim.cu, fed with the coefficients computed here (step_consts / segment_coeffs, the
// one place they are computed), which also reads 16-bit gradients, folds in the gradient scale
// and writes the 16-bit weights; m and v then live on the GPU (see Adam::to_device).
#include "optim/optimizer.h"

#include "core/cuda/optim.h"
#include "core/error.h"
#include "core/ops.h"
#include "optim/detail/step_tensors.h"

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>

namespace zt::optim {
namespace {

// Per-segment constants of the update (see the file comment).
struct Coeffs {
  float b1, b2, one_minus_b1, one_minus_b2;
  float l2, decoupled, step_size, inv_sqrt_bc2, eps;
};

// GCC fuses a product and a following add or sub into one fma under -ffp-contract=fast (its
// default in GNU mode), across statements and on vector intrinsics alike: p * decoupled - q would
// then round once instead of twice, giving other bits than before. An empty asm that claims to
// modify the product keeps it a rounded product (no instruction is emitted).
template <class T>
inline T keep_rounded(T x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+v"(x));  // "v": any SSE/AVX register, the one x already lives in
#endif
  return x;
}

[[maybe_unused]] void update_scalar(const Coeffs& c, float* p, const float* g, float* m, float* v,
                                    int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = std::fma(c.l2, p[i], g[i]);
    const float mi = std::fma(c.b1, m[i], c.one_minus_b1 * gi);
    const float vi = std::fma(c.b2, v[i], (c.one_minus_b2 * gi) * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = keep_rounded(p[i] * c.decoupled) -
           (c.step_size * mi) / std::fma(std::sqrt(vi), c.inv_sqrt_bc2, c.eps);
  }
}

#if defined(__AVX512F__)
struct Vec512 {
  __m512 b1, b2, one_minus_b1, one_minus_b2, l2, decoupled, step_size, inv_sqrt_bc2, eps;
  explicit Vec512(const Coeffs& c)
      : b1(_mm512_set1_ps(c.b1)),
        b2(_mm512_set1_ps(c.b2)),
        one_minus_b1(_mm512_set1_ps(c.one_minus_b1)),
        one_minus_b2(_mm512_set1_ps(c.one_minus_b2)),
        l2(_mm512_set1_ps(c.l2)),
        decoupled(_mm512_set1_ps(c.decoupled)),
        step_size(_mm512_set1_ps(c.step_size)),
        inv_sqrt_bc2(_mm512_set1_ps(c.inv_sqrt_bc2)),
        eps(_mm512_set1_ps(c.eps)) {}
};

// One vector of the update: the same operations, in the same order, as update_scalar.
inline void update16(const Vec512& k, __m512& p, __m512 g, __m512& m, __m512& v) {
  g = _mm512_fmadd_ps(k.l2, p, g);
  m = _mm512_fmadd_ps(k.b1, m, _mm512_mul_ps(k.one_minus_b1, g));
  v = _mm512_fmadd_ps(k.b2, v, _mm512_mul_ps(_mm512_mul_ps(k.one_minus_b2, g), g));
  const __m512 denom = _mm512_fmadd_ps(_mm512_sqrt_ps(v), k.inv_sqrt_bc2, k.eps);
  p = _mm512_sub_ps(keep_rounded(_mm512_mul_ps(p, k.decoupled)),
                    _mm512_div_ps(_mm512_mul_ps(k.step_size, m), denom));
}

void update_avx512(const Coeffs& c, float* p, const float* g, float* m, float* v, int64_t n) {
  const Vec512 k(c);
  int64_t i = 0;
  // Four vectors per iteration, all loads before all stores. From DRAM this changes nothing (the
  // loop waits on memory either way); from cache (spans up to a few MB) it runs ~10% faster on
  // Zen 4, whose 512-bit operations are split in two halves and where m and v (std::vectors) sit
  // 16 bytes off the 64-byte lines, so every 512-bit access of theirs spans two lines.
  constexpr int kUnroll = 4;
  for (; i + 16 * kUnroll <= n; i += 16 * kUnroll) {
    __m512 pi[kUnroll], mi[kUnroll], vi[kUnroll];
    for (int u = 0; u < kUnroll; ++u) {
      pi[u] = _mm512_loadu_ps(p + i + 16 * u);
      mi[u] = _mm512_loadu_ps(m + i + 16 * u);
      vi[u] = _mm512_loadu_ps(v + i + 16 * u);
      update16(k, pi[u], _mm512_loadu_ps(g + i + 16 * u), mi[u], vi[u]);
    }
    for (int u = 0; u < kUnroll; ++u) {
      _mm512_storeu_ps(m + i + 16 * u, mi[u]);
      _mm512_storeu_ps(v + i + 16 * u, vi[u]);
      _mm512_storeu_ps(p + i + 16 * u, pi[u]);
    }
  }
  for (; i + 16 <= n; i += 16) {
    __m512 pi = _mm512_loadu_ps(p + i), mi = _mm512_loadu_ps(m + i), vi = _mm512_loadu_ps(v + i);
    update16(k, pi, _mm512_loadu_ps(g + i), mi, vi);
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    _mm512_storeu_ps(p + i, pi);
  }
  if (i < n) {  // the last 1..15 parameters: lanes past n are neither read nor written
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1);
    __m512 pi = _mm512_maskz_loadu_ps(mask, p + i), mi = _mm512_maskz_loadu_ps(mask, m + i),
           vi = _mm512_maskz_loadu_ps(mask, v + i);
    update16(k, pi, _mm512_maskz_loadu_ps(mask, g + i), mi, vi);
    _mm512_mask_storeu_ps(m + i, mask, mi);
    _mm512_mask_storeu_ps(v + i, mask, vi);
    _mm512_mask_storeu_ps(p + i, mask, pi);
  }
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
struct Vec256 {
  __m256 b1, b2, one_minus_b1, one_minus_b2, l2, decoupled, step_size, inv_sqrt_bc2, eps;
  explicit Vec256(const Coeffs& c)
      : b1(_mm256_set1_ps(c.b1)),
        b2(_mm256_set1_ps(c.b2)),
        one_minus_b1(_mm256_set1_ps(c.one_minus_b1)),
        one_minus_b2(_mm256_set1_ps(c.one_minus_b2)),
        l2(_mm256_set1_ps(c.l2)),
        decoupled(_mm256_set1_ps(c.decoupled)),
        step_size(_mm256_set1_ps(c.step_size)),
        inv_sqrt_bc2(_mm256_set1_ps(c.inv_sqrt_bc2)),
        eps(_mm256_set1_ps(c.eps)) {}
};

inline void update8(const Vec256& k, __m256& p, __m256 g, __m256& m, __m256& v) {
  g = _mm256_fmadd_ps(k.l2, p, g);
  m = _mm256_fmadd_ps(k.b1, m, _mm256_mul_ps(k.one_minus_b1, g));
  v = _mm256_fmadd_ps(k.b2, v, _mm256_mul_ps(_mm256_mul_ps(k.one_minus_b2, g), g));
  const __m256 denom = _mm256_fmadd_ps(_mm256_sqrt_ps(v), k.inv_sqrt_bc2, k.eps);
  p = _mm256_sub_ps(keep_rounded(_mm256_mul_ps(p, k.decoupled)),
                    _mm256_div_ps(_mm256_mul_ps(k.step_size, m), denom));
}

[[maybe_unused]] void update_avx2(const Coeffs& c, float* p, const float* g, float* m, float* v,
                                  int64_t n) {
  const Vec256 k(c);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 pi = _mm256_loadu_ps(p + i), mi = _mm256_loadu_ps(m + i), vi = _mm256_loadu_ps(v + i);
    update8(k, pi, _mm256_loadu_ps(g + i), mi, vi);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, pi);
  }
  if (i < n) {  // the last 1..7 parameters, masked (lane j is on when j < n - i)
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 pi = _mm256_maskload_ps(p + i, mask), mi = _mm256_maskload_ps(m + i, mask),
           vi = _mm256_maskload_ps(v + i, mask);
    update8(k, pi, _mm256_maskload_ps(g + i, mask), mi, vi);
    _mm256_maskstore_ps(m + i, mask, mi);
    _mm256_maskstore_ps(v + i, mask, vi);
    _mm256_maskstore_ps(p + i, mask, pi);
  }
}
#endif

void update(const Coeffs& c, float* p, const float* g, float* m, float* v, int64_t n) {
#if defined(__AVX512F__)
  update_avx512(c, p, g, m, v, n);
#elif defined(__AVX2__) && defined(__FMA__)
  update_avx2(c, p, g, m, v, n);
#else
  update_scalar(c, p, g, m, v, n);
#endif
}

}  // namespace

namespace {

// The constants of one step: bias corrections in double (then rounded), as the file comment says.
// One function for the CPU loops and the device kernel, so both see the same floats.
struct StepConsts {
  double bc1, bc2;
};
StepConsts step_consts(const AdamParams& ap, int64_t step) {
  const double b1 = ap.beta1, b2 = ap.beta2;
  return {ap.bias_correction ? 1.0 - std::pow(b1, static_cast<double>(step)) : 1.0,
          ap.bias_correction ? 1.0 - std::pow(b2, static_cast<double>(step)) : 1.0};
}
Coeffs segment_coeffs(const AdamParams& ap, const StepConsts& sc, float lr, bool decay) {
  const float wd = decay ? ap.weight_decay : 0.f;
  return {ap.beta1,
          ap.beta2,
          1.f - ap.beta1,
          1.f - ap.beta2,
          ap.adam_w_mode ? 0.f : wd,
          ap.adam_w_mode ? std::fma(-lr, wd, 1.f) : 1.f,
          static_cast<float>(lr / sc.bc1),
          static_cast<float>(1.0 / std::sqrt(sc.bc2)),
          ap.eps};
}

}  // namespace

void adam_update(const AdamParams& ap, int64_t step, float lr, float* params, const float* grads,
                 float* exp_avg, float* exp_avg_sq, const std::vector<Segment>& segments) {
  const StepConsts sc = step_consts(ap, step);
  for (const Segment& s : segments) {
    const Coeffs c = segment_coeffs(ap, sc, lr, s.decay);
    // 16K parameters = 64 KB per stream per chunk: enough to amortize the loop setup, small
    // enough that two threads split even a few-MB segment evenly.
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = (s.size + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (s.size >= 4 * kChunk)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t lo = s.offset + ch * kChunk;
      const int64_t len = std::min(s.offset + s.size - lo, kChunk);
      update(c, params + lo, grads + lo, exp_avg + lo, exp_avg_sq + lo, len);
    }
  }
}

namespace {

class Adam final : public Optimizer {
 public:
  explicit Adam(const AdamParams& p) : p_(p) {}
  std::string name() const override { return p_.adam_w_mode ? "AdamW" : "Adam"; }

  void init(int64_t n) override {
    n_ = n;
    m_.assign(static_cast<size_t>(n), 0.f);
    v_.assign(static_cast<size_t>(n), 0.f);
    on_device_ = false;
    dm_ = dv_ = Tensor();
    work_ = cuda::AdamWorkList();
  }

  void step(float* params, const float* grads, int64_t n, const std::vector<Segment>& segments,
            float lr) override {
    to_host();
    ++t_;
    adam_update(p_, t_, lr, params, grads, m_.data(), v_.data(), segments);
    (void)n;
  }

  void step_tensors(Tensor& params, const Tensor& grads, const std::vector<Segment>& segments,
                    float lr, const StepExtras& x) override {
    if (!params.device().is_cuda()) {
      Optimizer::step_tensors(params, grads, segments, lr, x);  // calls step() above
      return;
    }
    detail::check_step_tensors(name(), params, grads, x, n_);
    to_device(params.device());
    if (!same_runs(segments)) {
      runs_.clear();
      for (const Segment& s : segments) runs_.push_back({s.offset, s.size, s.decay});
      work_ = cuda::adam_work_list(runs_, n_, params.device());
    }
    ++t_;
    const StepConsts sc = step_consts(p_, t_);
    const Coeffs c0 = segment_coeffs(p_, sc, lr, false), c1 = segment_coeffs(p_, sc, lr, true);
    cuda::AdamCoeffs k;
    k.b1 = c0.b1;
    k.b2 = c0.b2;
    k.one_minus_b1 = c0.one_minus_b1;
    k.one_minus_b2 = c0.one_minus_b2;
    k.eps = c0.eps;
    k.step_size = c0.step_size;
    k.inv_sqrt_bc2 = c0.inv_sqrt_bc2;
    k.l2[0] = c0.l2;
    k.l2[1] = c1.l2;
    k.decoupled[0] = c0.decoupled;
    k.decoupled[1] = c1.decoupled;
    k.grad_scale = x.grad_scale;
    cuda::fused_adam(k, work_, params, grads, dm_, dv_, x.params16);
  }

  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    to_host();
    return {{"exp_avg", &m_}, {"exp_avg_sq", &v_}};
  }
  int64_t state_bytes() override {
    return on_device_ ? 2 * n_ * static_cast<int64_t>(sizeof(float)) : Optimizer::state_bytes();
  }
  int64_t step_count() const override { return t_; }
  void set_step_count(int64_t s) override { t_ = s; }
  bool set_betas(float beta1, float beta2) override {
    p_.beta1 = beta1;
    p_.beta2 = beta2;
    return true;
  }

 private:
  // Where m and v live. On the host (m_, v_) until the first device step uploads them; from then
  // on on the GPU (dm_, dv_; the host vectors are released), until state() or a host step copies
  // them down again: the host copy is then current (a checkpoint load may overwrite it) and the
  // next device step uploads it.
  void to_device(Device d) {
    if (on_device_) {
      ZT_CHECK(dm_.device() == d, name(), ": the optimizer state lives on ", dm_.device().str(),
               ", the parameters on ", d.str());
      return;
    }
    ZT_CHECK(static_cast<int64_t>(m_.size()) == n_ && static_cast<int64_t>(v_.size()) == n_,
             name(), ": state of ", m_.size(), "/", v_.size(), " elements for a span of ", n_,
             " (init() not called, or a checkpoint loaded state of another size)");
    if (!dm_.defined() || dm_.device() != d) {
      dm_ = Tensor::empty({n_}, DType::f32, d);
      dv_ = Tensor::empty({n_}, DType::f32, d);
      work_ = cuda::AdamWorkList();  // built on the old device, if any
      runs_.clear();
    }
    if (n_ > 0) {
      ops::copy(Tensor::from_vector(m_, {n_}), dm_);  // synchronous: m_ may go now
      ops::copy(Tensor::from_vector(v_, {n_}), dv_);
    }
    std::vector<float>().swap(m_);
    std::vector<float>().swap(v_);
    on_device_ = true;
  }
  void to_host() {
    if (!on_device_) return;
    m_.resize(static_cast<size_t>(n_));
    v_.resize(static_cast<size_t>(n_));
    if (n_ > 0) {
      Tensor h = Tensor::empty({n_}, DType::f32);
      ops::copy(dm_, h);  // waits for the stream
      std::copy_n(h.data<float>(), n_, m_.data());
      ops::copy(dv_, h);
      std::copy_n(h.data<float>(), n_, v_.data());
    }
    on_device_ = false;
  }
  bool same_runs(const std::vector<Segment>& segs) const {
    if (work_.n != n_ || segs.size() != runs_.size()) return false;
    for (size_t i = 0; i < segs.size(); ++i)
      if (segs[i].offset != runs_[i].offset || segs[i].size != runs_[i].size ||
          segs[i].decay != runs_[i].decay)
        return false;
    return true;
  }

  AdamParams p_;
  int64_t t_ = 0;
  int64_t n_ = 0;
  std::vector<float> m_, v_;
  // Device state (CUDA runs): the moments and the chunk list of the segments it was built for.
  bool on_device_ = false;
  Tensor dm_, dv_;
  std::vector<cuda::AdamRun> runs_;
  cuda::AdamWorkList work_;
};

}  // namespace

std::unique_ptr<Optimizer> make_adam(const AdamParams& p) { return std::make_unique<Adam>(p); }

}  // namespace zt::optim
