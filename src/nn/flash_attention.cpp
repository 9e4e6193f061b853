// Fused CPU attention for inference (see flash_attention.h).
//
// For each (batch, head) and block of query rows Q_b (qn rows):
//   S   = scale * Q_b K^T            one GEMM, float32 [qn, Lk] (oneDNN
//                                     dnnl_sgemm / dnnl_gemm_bf16bf16f32,
//                                     bf16 inputs with float32 accumulation)
//   P   = exp(S - rowmax S)           float32, in place (bf16 copy for bf16)
//   O_b = (P V) / rowsum P            a second GEMM, then one scaled write
// qn is chosen so S (and P) stay within a few MB of cache; blocks are spread
// over the intra-op threads (oneDNN runs single-threaded inside them). The
// math is that of attend_once() in attention.cpp, which remains the path
// under autograd and the reference in tests/test_networks.cpp
// (Networks.FusedAttention*: float64 reference, strided inputs, both row
// kernels, bf16).
#include "flash_attention.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <dnnl.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TWEEDIE_X86 1
#endif

#include "tweedie/core/error.h"

// Exported by libdnnl 2.x (src/cpu/gemm/gemm.cpp) with the row-major
// semantics of dnnl_sgemm; declared in the public header only from 3.0.
extern "C" dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K,
                                               float alpha, const uint16_t* A, dnnl_dim_t lda, const uint16_t* B,
                                               dnnl_dim_t ldb, float beta, float* C, dnnl_dim_t ldc);

namespace tweedie::detail {

namespace {

std::atomic<bool> g_portable{false};

void gemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc) {
  const auto st = dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, 0.0f, C, ldc);
  check(st == dnnl_success, "attention: oneDNN sgemm failed (status ", int(st), ")");
}
// The stored rows x cols of a row-major operand (leading dimension ld) as a dense float copy.
const float* widened(const c10::BFloat16* X, int64_t rows, int64_t cols, int64_t ld, std::vector<float>& buf) {
  buf.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) buf[size_t(r * cols + c)] = float(X[r * ld + c]);
  return buf.data();
}

// oneDNN's bf16 GEMM needs AVX-512 (BF16 or AMX for speed); on CPUs without
// it (AVX2-only) it answers dnnl_unimplemented, and the operands are widened
// to float for sgemm instead (the same products, float accumulation).
std::atomic<bool> g_no_bf16_gemm{false};

void gemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const c10::BFloat16* A, int64_t lda,
          const c10::BFloat16* B, int64_t ldb, float* C, int64_t ldc) {
  if (!g_no_bf16_gemm.load(std::memory_order_relaxed)) {
    const auto st = dnnl_gemm_bf16bf16f32(ta, tb, M, N, K, alpha, reinterpret_cast<const uint16_t*>(A), lda,
                                          reinterpret_cast<const uint16_t*>(B), ldb, 0.0f, C, ldc);
    if (st == dnnl_success) return;
    check(st == dnnl_unimplemented, "attention: oneDNN bf16 gemm failed (status ", int(st), ")");
    g_no_bf16_gemm.store(true, std::memory_order_relaxed);
  }
  thread_local std::vector<float> a, b;
  const bool na = ta == 'N' || ta == 'n', nb = tb == 'N' || tb == 'n';
  const float* fa = widened(A, na ? M : K, na ? K : M, lda, a);
  const float* fb = widened(B, nb ? K : N, nb ? N : K, ldb, b);
  gemm(ta, tb, M, N, K, alpha, fa, na ? K : M, fb, nb ? N : K, C, ldc);
}

// One row of scores s[0, n): s <- exp(s - max s) in place, and (when pb is
// given) the same values rounded to bfloat16 into pb. Returns the row sum.
float softmax_row_portable(float* s, int64_t n, c10::BFloat16* pb) {
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
  for (int64_t j = 0; j < n; ++j) {
    nan |= std::isnan(s[j]);
    m = std::max(m, s[j]);
  }
  if (nan) m = std::numeric_limits<float>::quiet_NaN();
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - m);
    sum += s[j];
  }
  if (pb)
    for (int64_t j = 0; j < n; ++j) pb[j] = c10::BFloat16(s[j]);
  return sum;
}

#ifdef TWEEDIE_X86
// exp for x <= 88: n = round(x / ln 2), r = x - n ln 2 (two-part ln 2),
// e^r by Cephes' degree-6 expf polynomial, times 2^n by scalef. Relative
// error ~2 ulp; x below -87.3 gives ~1e-38 (a softmax weight of zero); NaN
// stays NaN (max/min return their second operand for a NaN first one).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.3762626647949f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-87.3365447504f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n);
}

// float32 -> bfloat16, round to nearest even, NaN -> 0x7FC0 (as c10::BFloat16).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m256i to_bf16(__m512 v) {
  __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  u = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  u = _mm512_mask_mov_epi32(u, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(u);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) float softmax_row_avx512(float* s, int64_t n, c10::BFloat16* pb) {
  __m512 mv = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __mmask16 nanv = 0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 x = _mm512_loadu_ps(s + j);
    nanv |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    mv = _mm512_max_ps(mv, x);
  }
  float m = _mm512_reduce_max_ps(mv);
  bool nan = nanv != 0;
  for (int64_t i = j; i < n; ++i) {
    nan |= std::isnan(s[i]);
    m = std::max(m, s[i]);
  }
  // A NaN anywhere in the row makes the whole row NaN (as the reference does).
  if (nan) m = std::numeric_limits<float>::quiet_NaN();
  const __m512 mb = _mm512_set1_ps(m);
  __m512 acc = _mm512_setzero_ps();
  for (j = 0; j < n; j += 16) {
    const __mmask16 k = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), mb));
    acc = _mm512_mask_add_ps(acc, k, acc, e);
    _mm512_mask_storeu_ps(s + j, k, e);
    if (pb) _mm256_mask_storeu_epi16(pb + j, k, to_bf16(e));
  }
  return _mm512_reduce_add_ps(acc);
}
#endif

using RowKernel = float (*)(float*, int64_t, c10::BFloat16*);

RowKernel row_kernel() {
#ifdef TWEEDIE_X86
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  if (avx512 && !g_portable.load()) return softmax_row_avx512;
#endif
  return softmax_row_portable;
}

template <typename T>
void run(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale, torch::Tensor& out) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), d = q.size(3), Lk = k.size(2), dv = v.size(3);
  // Leading dimensions (a length-1 axis may carry any stride).
  const int64_t ldq = Lq > 1 ? q.stride(2) : d, ldk = Lk > 1 ? k.stride(2) : d, ldv = Lk > 1 ? v.stride(2) : dv;
  // Query rows per block: scores (float32) and their bf16 copy within ~3 MB
  // (128 rows at 4096 keys in bf16; measured 25 % faster than L2-sized 21-row
  // blocks on SD1.5, whose GEMMs want more rows than that).
  constexpr int64_t kBudget = 3 * 1024 * 1024;
  const int64_t per_row = Lk * int64_t(sizeof(float) + (std::is_same_v<T, float> ? 0 : sizeof(T)));
  const int64_t qn = std::clamp<int64_t>(kBudget / per_row, 8, 256);
  const int64_t nblk = (Lq + qn - 1) / qn, tasks = B * H * nblk;
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const RowKernel rows = row_kernel();
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> s(static_cast<size_t>(qn * Lk)), o(static_cast<size_t>(qn * dv)), inv(static_cast<size_t>(qn));
    std::vector<c10::BFloat16> p(std::is_same_v<T, float> ? 0 : size_t(qn * Lk));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / nblk, b = bh / H, h = bh % H, i0 = (t % nblk) * qn, n = std::min(qn, Lq - i0);
      const T* qb = qp + b * q.stride(0) + h * q.stride(1) + i0 * q.stride(2);
      const T* kb = kp + b * k.stride(0) + h * k.stride(1);
      const T* vb = vp + b * v.stride(0) + h * v.stride(1);
      gemm('N', 'T', n, Lk, d, float(scale), qb, ldq, kb, ldk, s.data(), Lk);
      for (int64_t i = 0; i < n; ++i)
        inv[i] = 1.0f / rows(s.data() + i * Lk, Lk, p.empty() ? nullptr : p.data() + i * Lk);
      if constexpr (std::is_same_v<T, float>)
        gemm('N', 'N', n, dv, Lk, 1.0f, s.data(), Lk, vb, ldv, o.data(), dv);
      else
        gemm('N', 'N', n, dv, Lk, 1.0f, p.data(), Lk, vb, ldv, o.data(), dv);
      // out [B, Lq, H, dv]
      for (int64_t i = 0; i < n; ++i) {
        T* dst = op + ((b * Lq + i0 + i) * H + h) * dv;
        const float* src = o.data() + i * dv;
        for (int64_t j = 0; j < dv; ++j) dst[j] = T(src[j] * inv[i]);
      }
    }
  });
}

}  // namespace

void force_portable_attention_kernels(bool on) { g_portable.store(on); }

bool fused_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  if (torch::GradMode::is_enabled()) return false;
  if (!q.defined() || !k.defined() || !v.defined() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  const auto dt = q.scalar_type();
  if ((dt != torch::kFloat32 && dt != torch::kBFloat16) || k.scalar_type() != dt || v.scalar_type() != dt) return false;
  if (!q.device().is_cpu() || !k.device().is_cpu() || !v.device().is_cpu()) return false;
  if (q.size(0) != k.size(0) || q.size(0) != v.size(0) || q.size(1) != k.size(1) || q.size(1) != v.size(1) ||
      q.size(3) != k.size(3) || k.size(2) != v.size(2) || k.size(2) < 1 || q.size(3) < 1 || v.size(3) < 1)
    return false;
  for (const auto* t : {&q, &k, &v}) {
    // Unit stride along the feature axis, rows that do not overlap, no negative strides.
    if (t->stride(3) != 1 || (t->size(2) > 1 && t->stride(2) < t->size(3))) return false;
    if (t->stride(0) < 0 || t->stride(1) < 0) return false;
  }
  return true;
}

torch::Tensor fused_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale) {
  check(fused_attention_applies(q, k, v), "fused attention: unsupported inputs q ", q.sizes(), ", k ", k.sizes(),
        ", v ", v.sizes());
  RECORD_FUNCTION("tweedie::fused_attention", std::vector<c10::IValue>({q, k, v}));  // visible to the torch profiler
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), dv = v.size(3);
  auto out = torch::empty({B, Lq, H, dv}, q.options());
  if (out.numel() == 0) return out.view({B, Lq, H * dv});
  if (q.scalar_type() == torch::kFloat32)
    run<float>(q, k, v, scale, out);
  else
    run<c10::BFloat16>(q, k, v, scale, out);
  return out.view({B, Lq, H * dv});
}

}  // namespace tweedie::detail
