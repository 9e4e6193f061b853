// Fused CPU kernels for bf16 inference (see src/nn/fused_ops.h). Plain C++
// loops, blocked by 16 so GCC vectorizes them at -O2, cloned for AVX-512 /
// AVX2+FMA / baseline x86-64 (target_clones; the baseline clone runs anywhere),
// parallelized with at::parallel_for. bf16 <-> fp32 by bit operations; fp32 ->
// bf16 rounds to nearest even and maps NaN to 0x7fc0, exactly as c10::BFloat16.
//
// 1. GroupNorm (+ SiLU), channels_last [N, C, H, W] (memory NHWC), bf16 or fp32.
//    For each (n, group g): mean = sum x / (HW C/G), var = sum (x - mean)^2 /
//    (HW C/G). Numerically safe two-pass per block: per channel and block of
//    64 pixels, the block mean m (float), then D = sum (x - m), Q = sum (x - m)^2
//    while the block is in cache; blocks combined exactly in double
//    (sum (x - mean)^2 = sum Q + 2 (m - mean) D + rows (m - mean)^2) in a fixed
//    order, so the result does not depend on the thread count, and x is read
//    from memory twice in all (statistics, output). Then y = x * a[n,c] + b[n,c] with
//    a = weight[c] / sqrt(var + eps), b = bias[c] - mean a, computed in fp32,
//    optionally y <- y / (1 + exp(-y)) (SiLU) in fp32, and rounded once to x's
//    dtype, written channels_last. Used by GroupNorm32::forward / forward_silu.
// 2. LayerNorm over the last dim of a contiguous bf16 tensor: per row mean and
//    centered variance in fp32 (16 lanes, combined in double), y = (x - mean) *
//    rstd * w + b in fp32, rounded to bf16. Used by layer_norm_f32.
// 3. GEGLU: x [..., 2n] bf16 -> a * gelu(g), (a, g) = x.chunk(2, -1),
//    gelu(g) = g/2 (1 + erf(g / sqrt 2)) in fp32, rounded once to bf16.
//    erf: |z| < 1: z P6(z^2); 1 <= |z| < 4: erfc(|z|) = exp(Q10(|z|) - z^2)
//    (Chebyshev-interpolated P, Q; 1 + erf(z) for z <= -1 is computed as erfc,
//    so the negative tail of gelu keeps its relative accuracy down to z = -4);
//    |z| >= 4: erf = +-1. Max |erf error| measured ~1e-7 (<= 2e-7 asserted).
//    exp: Cody-Waite reduction + Cephes' degree-5 polynomial, 2^n by bits.
// Each path is taken only under no grad mode, on CPU, for the dtypes and
// layouts above (the *_applies predicates); callers fall back to torch code.
// Verified in tests/test_fused_ops.cpp: each kernel against a float64
// reference computed from the same bf16 input (large-mean GroupNorm input,
// odd sizes, large |g|, NaN), bit-exact bf16 rounding against c10::BFloat16,
// erf against std::erf on a dense grid, and fused vs autograd (torch) paths.
#include "fused_ops.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define TW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TW_CLONES
#endif
#define TW_INLINE static inline __attribute__((always_inline))

namespace tweedie::detail {

namespace {

constexpr int64_t kV = 16;        // inner block: one AVX-512 vector of floats
constexpr int64_t kGnRows = 64;   // pixels per GroupNorm partial sum

// c ? a : b by bit masks. Written as ?: , GCC's jump threading turns some of
// the conditions of one_plus_erf into branches and the loop no longer vectorizes.
TW_INLINE float sel(bool c, float a, float b) {
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  const uint32_t m = 0u - uint32_t(c), r = (ua & m) | (ub & ~m);
  float f;
  std::memcpy(&f, &r, 4);
  return f;
}

TW_INLINE float ld(const uint16_t* p) {
  uint32_t u = uint32_t(*p) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
TW_INLINE float ld(const float* p) { return *p; }
TW_INLINE void st(uint16_t* p, float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = 0u - uint32_t(f != f);
  *p = uint16_t((0x7fc0u & nan) | (r & ~nan));
}
TW_INLINE void st(float* p, float f) { *p = f; }

TW_INLINE float expf_(float x) {
  x = sel(x > -87.0f, x, -87.0f);  // NaN -> -87 (callers propagate NaN through their other factor)
  x = sel(x < 88.0f, x, 88.0f);
  const float r = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  float f = x - r * 0.693359375f;
  f = f - r * -2.12194440e-4f;
  const float z = f * f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * z + f + 1.0f;
  const int32_t n = int32_t(r);
  const uint32_t e = uint32_t(n + 127) << 23;
  float s;
  std::memcpy(&s, &e, 4);
  return p * s;
}

// erf(a) for 0 <= a < 1 (e1) and erfc(a) for 1 <= a < 4, else 0 (ec); both computed
// for every a, no control flow.
TW_INLINE void erf_parts(float az, float& e1, float& ec) {
  // a < 1: erf(a) = a P(t), t = 2 a^2 - 1 in [-1, 1].
  const float t1 = 2.0f * az * az - 1.0f;
  float p = 1.230605479e-06f;
  p = p * t1 + -1.766906803e-05f;
  p = p * t1 + 2.175135417e-04f;
  p = p * t1 + -2.285419545e-03f;
  p = p * t1 + 1.985249714e-02f;
  p = p * t1 + -1.405360973e-01f;
  p = p * t1 + 9.654687387e-01f;
  e1 = az * p;
  // 1 <= a < 4: erfc(a) = exp(Q(t) - a^2), t = (a - 2.5) / 1.5.
  const float ac = sel(az < 4.0f, az, 4.0f);  // NaN -> 4
  const float t2 = (ac - 2.5f) * (2.0f / 3.0f);
  float q = -2.211289408e-06f;
  q = q * t2 + -2.542888620e-06f;
  q = q * t2 + 4.689558702e-05f;
  q = q * t2 + -2.216819371e-04f;
  q = q * t2 + 8.767322218e-04f;
  q = q * t2 + -3.194763892e-03f;
  q = q * t2 + 1.096285255e-02f;
  q = q * t2 + -3.664630296e-02f;
  q = q * t2 + 1.262390933e-01f;
  q = q * t2 + -5.290211110e-01f;
  q = q * t2 + -1.556815273e+00f;
  ec = sel(az < 4.0f, expf_(q - ac * ac), 0.0f);
}

// 1 + erf(z), with erfc's relative accuracy for z <= -1. NaN -> 2 (gelu's
// factor g carries the NaN).
TW_INLINE float one_plus_erf(float z) {
  float e1, ec;
  erf_parts(std::fabs(z), e1, ec);
  const bool neg = z < 0.0f;
  return sel(std::fabs(z) < 1.0f, sel(neg, 1.0f - e1, 1.0f + e1), sel(neg, ec, 2.0f - ec));
}

// ---- GroupNorm ----

template <typename T>
TW_INLINE void gn_sum_body(const T* __restrict x, int64_t rows, int64_t C, float* __restrict acc) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict xr = x + r * C;
    int64_t c = 0;
    for (; c + kV <= C; c += kV)
      for (int64_t j = 0; j < kV; ++j) acc[c + j] += ld(xr + c + j);
    for (; c < C; ++c) acc[c] += ld(xr + c);
  }
}

template <typename T>
TW_INLINE void gn_center_body(const T* __restrict x, int64_t rows, int64_t C, const float* __restrict mean,
                              float* __restrict dacc, float* __restrict qacc) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict xr = x + r * C;
    int64_t c = 0;
    for (; c + kV <= C; c += kV)
      for (int64_t j = 0; j < kV; ++j) {
        const float d = ld(xr + c + j) - mean[c + j];
        dacc[c + j] += d;
        qacc[c + j] += d * d;
      }
    for (; c < C; ++c) {
      const float d = ld(xr + c) - mean[c];
      dacc[c] += d;
      qacc[c] += d * d;
    }
  }
}

template <bool kSilu>
TW_INLINE float gn_out(float x, float a, float b) {
  const float v = x * a + b;
  return kSilu ? v / (1.0f + expf_(-v)) : v;
}

template <typename T, bool kSilu>
TW_INLINE void gn_apply_body(const T* __restrict x, T* __restrict y, int64_t rows, int64_t C,
                             const float* __restrict a, const float* __restrict b) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict xr = x + r * C;
    T* __restrict yr = y + r * C;
    int64_t c = 0;
    for (; c + kV <= C; c += kV)
      for (int64_t j = 0; j < kV; ++j) st(yr + c + j, gn_out<kSilu>(ld(xr + c + j), a[c + j], b[c + j]));
    for (; c < C; ++c) st(yr + c, gn_out<kSilu>(ld(xr + c), a[c], b[c]));
  }
}

TW_CLONES void gn_sum_bf16(const uint16_t* x, int64_t rows, int64_t C, float* acc) { gn_sum_body(x, rows, C, acc); }
TW_CLONES void gn_sum_f32(const float* x, int64_t rows, int64_t C, float* acc) { gn_sum_body(x, rows, C, acc); }
TW_CLONES void gn_center_bf16(const uint16_t* x, int64_t rows, int64_t C, const float* m, float* d, float* q) {
  gn_center_body(x, rows, C, m, d, q);
}
TW_CLONES void gn_center_f32(const float* x, int64_t rows, int64_t C, const float* m, float* d, float* q) {
  gn_center_body(x, rows, C, m, d, q);
}
TW_CLONES void gn_apply_bf16(const uint16_t* x, uint16_t* y, int64_t rows, int64_t C, const float* a, const float* b,
                             bool silu) {
  if (silu)
    gn_apply_body<uint16_t, true>(x, y, rows, C, a, b);
  else
    gn_apply_body<uint16_t, false>(x, y, rows, C, a, b);
}
TW_CLONES void gn_apply_f32(const float* x, float* y, int64_t rows, int64_t C, const float* a, const float* b,
                            bool silu) {
  if (silu)
    gn_apply_body<float, true>(x, y, rows, C, a, b);
  else
    gn_apply_body<float, false>(x, y, rows, C, a, b);
}

void gn_sum(const void* x, bool bf, int64_t rows, int64_t C, float* acc) {
  bf ? gn_sum_bf16(static_cast<const uint16_t*>(x), rows, C, acc) : gn_sum_f32(static_cast<const float*>(x), rows, C, acc);
}
void gn_center(const void* x, bool bf, int64_t rows, int64_t C, const float* m, float* d, float* q) {
  bf ? gn_center_bf16(static_cast<const uint16_t*>(x), rows, C, m, d, q)
     : gn_center_f32(static_cast<const float*>(x), rows, C, m, d, q);
}

// ---- LayerNorm ----

TW_CLONES void ln_rows_bf16(const uint16_t* __restrict x, uint16_t* __restrict y, int64_t rows, int64_t d,
                            const float* __restrict w, const float* __restrict b, float eps, float* __restrict buf) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* __restrict xr = x + r * d;
    uint16_t* __restrict yr = y + r * d;
    float lane[kV] = {};
    int64_t i = 0;
    for (; i + kV <= d; i += kV)
      for (int64_t j = 0; j < kV; ++j) {
        const float v = ld(xr + i + j);
        buf[i + j] = v;
        lane[j] += v;
      }
    double s = 0;
    for (; i < d; ++i) {
      buf[i] = ld(xr + i);
      s += buf[i];
    }
    for (int64_t j = 0; j < kV; ++j) s += lane[j];
    const float mean = float(s / double(d));
    float lane2[kV] = {};
    i = 0;
    for (; i + kV <= d; i += kV)
      for (int64_t j = 0; j < kV; ++j) {
        const float c = buf[i + j] - mean;
        lane2[j] += c * c;
      }
    double ss = 0;
    for (; i < d; ++i) ss += double(buf[i] - mean) * double(buf[i] - mean);
    for (int64_t j = 0; j < kV; ++j) ss += lane2[j];
    const float rstd = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    i = 0;
    for (; i + kV <= d; i += kV)
      for (int64_t j = 0; j < kV; ++j) st(yr + i + j, (buf[i + j] - mean) * rstd * w[i + j] + b[i + j]);
    for (; i < d; ++i) st(yr + i, (buf[i] - mean) * rstd * w[i] + b[i]);
  }
}

// ---- GEGLU ----

TW_INLINE float geglu1(float a, float g) { return a * (0.5f * g * one_plus_erf(g * 0.70710678118654752f)); }

TW_CLONES void geglu_rows_bf16(const uint16_t* __restrict x, uint16_t* __restrict y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* __restrict xa = x + r * 2 * n;
    const uint16_t* __restrict xg = xa + n;
    uint16_t* __restrict yr = y + r * n;
    int64_t i = 0;
    for (; i + kV <= n; i += kV)
      for (int64_t j = 0; j < kV; ++j) st(yr + i + j, geglu1(ld(xa + i + j), ld(xg + i + j)));
    for (; i < n; ++i) st(yr + i, geglu1(ld(xa + i), ld(xg + i)));
  }
}

// Affine parameter as a float vector of n elements (default value where undefined);
// read directly when it is a contiguous CPU float32/bf16 tensor (no torch ops).
std::vector<float> param_f32(const torch::Tensor& p, int64_t n, float dflt) {
  if (!p.defined()) return std::vector<float>(size_t(n), dflt);
  TORCH_CHECK(p.numel() == n, "fused norm: affine parameter has ", p.numel(), " elements, expected ", n);
  std::vector<float> v(static_cast<size_t>(n));
  if (p.device().is_cpu() && p.is_contiguous() && p.scalar_type() == torch::kFloat32) {
    std::memcpy(v.data(), p.data_ptr<float>(), size_t(n) * 4);
  } else if (p.device().is_cpu() && p.is_contiguous() && p.scalar_type() == torch::kBFloat16) {
    const auto* b = reinterpret_cast<const uint16_t*>(p.data_ptr<at::BFloat16>());
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = ld(b + i);
  } else {
    auto t = p.to(torch::kCPU, torch::kFloat32).contiguous();
    std::memcpy(v.data(), t.data_ptr<float>(), size_t(n) * 4);
  }
  return v;
}

bool float_cpu(const torch::Tensor& x) { return x.defined() && x.device().is_cpu() && !torch::GradMode::is_enabled(); }

}  // namespace

float bf16_bits_to_float(uint16_t h) { return ld(&h); }
uint16_t float_to_bf16_bits(float f) {
  uint16_t h;
  st(&h, f);
  return h;
}
float erf_approx(float z) {
  const float az = std::fabs(z);
  float e1, ec;
  erf_parts(az, e1, ec);
  return z != z ? z : std::copysign(az < 1.0f ? e1 : 1.0f - ec, z);
}
float exp_approx(float x) { return expf_(x); }

bool fused_group_norm_applies(const torch::Tensor& x) {
  return float_cpu(x) && x.dim() == 4 &&
         (x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat32) &&
         x.is_contiguous(torch::MemoryFormat::ChannelsLast);
}

torch::Tensor fused_group_norm(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                               const torch::Tensor& bias, double eps, bool silu) {
  TORCH_CHECK(fused_group_norm_applies(x), "fused_group_norm: unsupported input");
  RECORD_FUNCTION("tweedie::fused_group_norm", std::vector<c10::IValue>({x}));  // visible to the torch profiler
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), G = groups;
  TORCH_CHECK(G >= 1 && C % G == 0, "fused_group_norm: ", G, " groups do not divide ", C, " channels");
  auto out = torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::ChannelsLast));
  if (x.numel() == 0) return out;
  const int64_t Cg = C / G, nb = (HW + kGnRows - 1) / kGnRows, nblk = N * nb;
  const bool bf = x.scalar_type() == torch::kBFloat16;
  const size_t es = bf ? 2 : 4;
  const char* xp = static_cast<const char*>(x.data_ptr());
  char* yp = static_cast<char*>(out.data_ptr());
  const auto w = param_f32(weight, C, 1.0f), bs = param_f32(bias, C, 0.0f);

  // Per block of kGnRows pixels of one image and per channel: the block mean m
  // (float), then, in a second pass over the block while it is in cache,
  // D = sum (x - m) and Q = sum (x - m)^2.
  const size_t np = size_t(nblk * C);
  std::vector<float> pm(np), pd(np, 0.0f), pq(np, 0.0f);
  at::parallel_for(0, nblk, std::max<int64_t>(1, 32768 / (kGnRows * C)), [&](int64_t b0, int64_t b1) {
    for (int64_t i = b0; i < b1; ++i) {
      const int64_t n = i / nb, r0 = (i % nb) * kGnRows, rows = std::min(kGnRows, HW - r0);
      const void* xi = xp + size_t((n * HW + r0) * C) * es;
      float* m = pm.data() + i * C;
      std::fill(m, m + C, 0.0f);
      gn_sum(xi, bf, rows, C, m);
      for (int64_t c = 0; c < C; ++c) m[c] /= float(rows);
      gn_center(xi, bf, rows, C, m, pd.data() + i * C, pq.data() + i * C);
    }
  });
  // Per (n, g), in double and a fixed order (independent of the thread count):
  // mean = sum (rows m + D) / count, and the exact identity
  // sum (x - mean)^2 = sum [Q + 2 (m - mean) D + rows (m - mean)^2].
  std::vector<float> a(size_t(N * C)), b(size_t(N * C));
  const double count = double(HW * Cg);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      double s = 0, m2 = 0;
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t blk = 0; blk < nb; ++blk) {
          const size_t o = size_t((n * nb + blk) * C + g * Cg);
          const double rows = double(std::min(kGnRows, HW - blk * kGnRows)), mean = s / count;
          for (int64_t c = 0; c < Cg; ++c) {
            const double m = pm[o + c], d = pd[o + c];
            if (pass == 0)
              s += rows * m + d;
            else
              m2 += pq[o + c] + 2 * (m - mean) * d + rows * (m - mean) * (m - mean);
          }
        }
      const double mean = s / count, rstd = 1.0 / std::sqrt(std::max(0.0, m2 / count) + eps);
      for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
        a[n * C + c] = float(rstd * w[c]);
        b[n * C + c] = float(bs[c] - mean * rstd * w[c]);
      }
    }

  at::parallel_for(0, N * HW, std::max<int64_t>(1, 16384 / C), [&](int64_t r0, int64_t r1) {
    while (r0 < r1) {  // rows of one image at a time (a, b are per image)
      const int64_t n = r0 / HW, r = std::min(r1, (n + 1) * HW) - r0;
      const size_t off = size_t(r0 * C) * es;
      if (bf)
        gn_apply_bf16(reinterpret_cast<const uint16_t*>(xp + off), reinterpret_cast<uint16_t*>(yp + off), r, C,
                      a.data() + n * C, b.data() + n * C, silu);
      else
        gn_apply_f32(reinterpret_cast<const float*>(xp + off), reinterpret_cast<float*>(yp + off), r, C,
                     a.data() + n * C, b.data() + n * C, silu);
      r0 += r;
    }
  });
  return out;
}

bool fused_layer_norm_applies(const torch::Tensor& x) {
  return float_cpu(x) && x.dim() >= 1 && x.scalar_type() == torch::kBFloat16 && x.is_contiguous();
}

torch::Tensor fused_layer_norm(const torch::Tensor& x, double eps, const torch::Tensor& weight,
                               const torch::Tensor& bias) {
  TORCH_CHECK(fused_layer_norm_applies(x), "fused_layer_norm: unsupported input");
  RECORD_FUNCTION("tweedie::fused_layer_norm", std::vector<c10::IValue>({x}));  // visible to the torch profiler
  auto out = torch::empty_like(x, torch::MemoryFormat::Contiguous);
  const int64_t d = x.size(-1);
  if (x.numel() == 0 || d == 0) return out;
  const int64_t rows = x.numel() / d;
  const auto w = param_f32(weight, d, 1.0f), b = param_f32(bias, d, 0.0f);
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  auto* yp = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / d), [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(static_cast<size_t>(d));
    ln_rows_bf16(xp + r0 * d, yp + r0 * d, r1 - r0, d, w.data(), b.data(), float(eps), buf.data());
  });
  return out;
}

bool fused_geglu_applies(const torch::Tensor& x) {
  return float_cpu(x) && x.dim() >= 1 && x.scalar_type() == torch::kBFloat16 && x.size(-1) % 2 == 0 &&
         x.is_contiguous();
}

torch::Tensor fused_geglu(const torch::Tensor& x) {
  TORCH_CHECK(fused_geglu_applies(x), "fused_geglu: unsupported input");
  RECORD_FUNCTION("tweedie::fused_geglu", std::vector<c10::IValue>({x}));  // visible to the torch profiler
  auto sizes = x.sizes().vec();
  const int64_t n = sizes.back() / 2;
  sizes.back() = n;
  auto out = torch::empty(sizes, x.options().memory_format(torch::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  const int64_t rows = out.numel() / n;
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  auto* yp = reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>());
  at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / n), [&](int64_t r0, int64_t r1) {
    geglu_rows_bf16(xp + r0 * 2 * n, yp + r0 * n, r1 - r0, n);
  });
  return out;
}

}  // namespace tweedie::detail
