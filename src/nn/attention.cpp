// Multi-head attention with hook sites: efficient chunked path and explicit
// path (see include/tweedie/nn/attention.h). Verified in
// tests/test_networks.cpp against a float64 reference, with hook properties.
#include "tweedie/nn/attention.h"

#include <cmath>

#include "flash_attention.h"
#include "inplace.h"
#include "tweedie/core/error.h"

namespace tweedie {

namespace {

// Chunk shape: nb (batch*heads) x nq (query rows) with nb * nq * Lk <= budget;
// nb > 1 only when whole query ranges fit, so every chunk of a contiguous
// [BH, Lq, *] tensor is itself contiguous.
void chunk_shape(int64_t BH, int64_t Lq, int64_t Lk, int64_t budget, int64_t& nb, int64_t& nq) {
  const int64_t rows = std::max<int64_t>(1, budget / std::max<int64_t>(1, Lk));
  if (rows >= Lq) {
    nq = Lq;
    nb = std::min<int64_t>(BH, std::max<int64_t>(1, rows / std::max<int64_t>(1, Lq)));
  } else {
    nq = rows;
    nb = 1;
  }
}

torch::Tensor attend_once(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, double scale) {
  auto s = torch::bmm(q, k.transpose(1, 2)).mul_(scale);  // bmm output is fresh: in-place scale is autograd-safe
  return torch::bmm(torch::softmax(s, -1), v);
}

}  // namespace

torch::Tensor attention_probs(const torch::Tensor& q, const torch::Tensor& k, double scale) {
  auto s = torch::bmm(q, k.transpose(1, 2)).mul_(scale);
  return torch::softmax(s, -1, torch::kFloat32);
}

torch::Tensor scaled_dot_product_attention(const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0,
                                           double scale, int64_t max_chunk_elems) {
  check(q0.dim() == 3 && k0.dim() == 3 && v0.dim() == 3 && q0.size(0) == k0.size(0) && k0.size(0) == v0.size(0) &&
            q0.size(2) == k0.size(2) && k0.size(1) == v0.size(1),
        "attention: mismatched q ", q0.sizes(), ", k ", k0.sizes(), ", v ", v0.sizes());
  {
    auto q4 = q0.unsqueeze(1), k4 = k0.unsqueeze(1), v4 = v0.unsqueeze(1);  // one head each: [BH, 1, L, d]
    if (detail::fused_attention_applies(q4, k4, v4)) return detail::fused_attention(q4, k4, v4, scale);  // [BH, Lq, dv]
  }
  auto q = q0.contiguous(), k = k0.contiguous(), v = v0.contiguous();
  const int64_t BH = q.size(0), Lq = q.size(1), Lk = k.size(1), dv = v.size(2);
  int64_t nb, nq;
  chunk_shape(BH, Lq, Lk, max_chunk_elems, nb, nq);
  if (nb >= BH && nq >= Lq) return attend_once(q, k, v, scale);

  if (!detail::can_inplace()) {
    // Gradient recorded: functional chunks, joined once.
    std::vector<torch::Tensor> rows;
    for (int64_t b0 = 0; b0 < BH; b0 += nb) {
      const int64_t bn = std::min(nb, BH - b0);
      auto qb = q.narrow(0, b0, bn), kb = k.narrow(0, b0, bn), vb = v.narrow(0, b0, bn);
      std::vector<torch::Tensor> cols;
      for (int64_t i0 = 0; i0 < Lq; i0 += nq) cols.push_back(attend_once(qb.narrow(1, i0, std::min(nq, Lq - i0)), kb, vb, scale));
      rows.push_back(cols.size() == 1 ? cols[0] : torch::cat(cols, 1));
    }
    return rows.size() == 1 ? rows[0] : torch::cat(rows, 0);
  }

  // Inference: two score buffers reused by every chunk, results written in place.
  auto out = torch::empty({BH, Lq, dv}, v.options());
  auto sbuf = torch::empty({nb * nq * Lk}, q.options()), pbuf = torch::empty({nb * nq * Lk}, q.options());
  for (int64_t b0 = 0; b0 < BH; b0 += nb) {
    const int64_t bn = std::min(nb, BH - b0);
    auto kt = k.narrow(0, b0, bn).transpose(1, 2);
    auto vb = v.narrow(0, b0, bn);
    for (int64_t i0 = 0; i0 < Lq; i0 += nq) {
      const int64_t qn = std::min(nq, Lq - i0);
      auto s = sbuf.narrow(0, 0, bn * qn * Lk).view({bn, qn, Lk});
      auto p = pbuf.narrow(0, 0, bn * qn * Lk).view({bn, qn, Lk});
      torch::bmm_out(s, q.narrow(0, b0, bn).narrow(1, i0, qn), kt);
      s.mul_(scale);
      torch::softmax_out(p, s, -1);
      auto o = out.narrow(0, b0, bn).narrow(1, i0, qn);  // contiguous (see chunk_shape)
      torch::bmm_out(o, p, vb);
    }
  }
  return out;
}

AttentionSites::AttentionSites(const std::string& path)
    : any(!path.empty()), q(path + ".q"), k(path + ".k"), v(path + ".v"), probs(path + ".probs"), out(path + ".out") {}

torch::Tensor multihead_attention(const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0,
                                  int64_t heads, const AttentionSites& sites, const Hooks* hooks) {
  (void)heads;
  torch::Tensor q = q0, k = k0, v = v0;  // [B, H, L, d]
  const bool hooked = hooks && sites.any;
  if (hooked) {
    q = hooks->apply(sites.q, q);
    k = hooks->apply(sites.k, k);
    v = hooks->apply(sites.v, v);
  }
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), d = q.size(3), Lk = k.size(2), dv = v.size(3);
  check(k.size(0) == B && v.size(0) == B && k.size(1) == H && v.size(1) == H && k.size(3) == d && v.size(2) == Lk,
        "attention ", sites.q, ": mismatched q ", q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  const double scale = 1.0 / std::sqrt(double(d));
  const bool probs_hooked = hooked && hooks->wants(sites.probs);
  if (!probs_hooked && detail::fused_attention_applies(q, k, v)) return detail::fused_attention(q, k, v, scale);
  auto qf = q.reshape({B * H, Lq, d}), kf = k.reshape({B * H, Lk, d}), vf = v.reshape({B * H, Lk, dv});
  torch::Tensor o;
  if (probs_hooked) {
    auto p = hooks->apply(sites.probs, attention_probs(qf, kf, scale));
    o = torch::bmm(p.to(vf.scalar_type()), vf);
  } else {
    o = scaled_dot_product_attention(qf, kf, vf, scale);
  }
  return o.view({B, H, Lq, dv}).transpose(1, 2).reshape({B, Lq, H * dv});
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads, int64_t context_dim, const std::string& site)
    : dim_(dim), heads_(heads), sites_(site) {
  check(heads >= 1 && dim % heads == 0, "attention: ", heads, " heads do not divide width ", dim);
  if (context_dim > 0) {
    q = register_module("q", torch::nn::Linear(dim, dim));
    kv = register_module("kv", torch::nn::Linear(context_dim, 2 * dim));
  } else {
    qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  }
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context, const Hooks* hooks) {
  const int64_t B = x.size(0), L = x.size(1), H = heads_, d = dim_ / heads_;
  torch::Tensor qh, kh, vh;
  if (qkv) {
    check(!context.defined(), "attention ", sites_.q, ": self-attention was given a context");
    auto t = qkv->forward(x).view({B, L, 3, H, d}).permute({2, 0, 3, 1, 4}).contiguous();
    qh = t[0], kh = t[1], vh = t[2];
  } else {
    check(context.defined() && context.dim() == 3 && context.size(0) == B,
          "attention ", sites_.q, ": cross-attention needs a context [B, L, D] with B = ", B);
    const int64_t Lk = context.size(1);
    qh = q->forward(x).view({B, L, H, d}).transpose(1, 2);
    auto t = kv->forward(context.to(x.scalar_type())).view({B, Lk, 2, H, d}).permute({2, 0, 3, 1, 4}).contiguous();
    kh = t[0], vh = t[1];
  }
  auto o = proj->forward(multihead_attention(qh, kh, vh, H, sites_, hooks));
  return hooks && sites_.any ? hooks->apply(sites_.out, o) : o;
}

AttentionBlock2dImpl::AttentionBlock2dImpl(int64_t channels, int64_t heads, int64_t groups, const std::string& site)
    : channels_(channels), heads_(heads), sites_(site) {
  check(heads >= 1 && channels % heads == 0, "attention: ", heads, " heads do not divide ", channels, " channels");
  norm = register_module("norm", GroupNorm32(groups, channels));
  qkv = register_module("qkv", torch::nn::Linear(channels, 3 * channels));
  proj_out = register_module("proj_out", torch::nn::Linear(channels, channels));
  torch::NoGradGuard g;
  proj_out->weight.zero_();
  proj_out->bias.zero_();
}

torch::Tensor AttentionBlock2dImpl::forward(const torch::Tensor& x, const Hooks* hooks) {
  const int64_t B = x.size(0), C = channels_, L = x.size(2) * x.size(3), H = heads_, d = C / H;
  auto h = norm->forward(x).view({B, C, L}).transpose(1, 2);                            // [B, L, C]
  auto t = qkv->forward(h).view({B, L, 3, H, d}).permute({2, 0, 3, 1, 4}).contiguous();  // [3, B, H, L, d]
  auto r = proj_out->forward(multihead_attention(t[0], t[1], t[2], H, sites_, hooks));  // [B, L, C]
  const bool hooked = hooks && sites_.any;
  if (hooked) r = hooks->apply(sites_.out, r);
  auto rt = r.transpose(1, 2).contiguous().view(x.sizes());  // NCHW (fresh unless a hook's own tensor)
  return hooked ? rt + x : detail::add_owned(rt, x);
}

}  // namespace tweedie
