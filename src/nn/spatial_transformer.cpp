// Latent-diffusion transformer: CrossAttention, GEGLU feed-forward,
// BasicTransformerBlock, SpatialTransformer (see
// include/tweedie/nn/spatial_transformer.h for the equations and names).
// Verified in tests/test_sd_unet.cpp against a float64 hand computation.
#include "tweedie/nn/spatial_transformer.h"

#include "fused_ops.h"
#include "inplace.h"
#include "tweedie/core/error.h"

namespace tweedie {

namespace nn = torch::nn;

namespace {
// An empty module used as a name holder (LDM's nn.Sequential containers).
std::shared_ptr<nn::Module> holder() { return std::make_shared<nn::Module>(); }
}  // namespace

CrossAttentionImpl::CrossAttentionImpl(int64_t query_dim, int64_t heads, int64_t dim_head, int64_t context_dim,
                                       const std::string& site)
    : heads_(heads), dim_head_(dim_head), self_(context_dim <= 0), sites_(site) {
  check(heads >= 1 && dim_head >= 1, "attention ", site, ": needs heads >= 1 and dim_head >= 1");
  const int64_t inner = heads * dim_head, kv_dim = self_ ? query_dim : context_dim;
  to_q = register_module("to_q", nn::Linear(nn::LinearOptions(query_dim, inner).bias(false)));
  to_k = register_module("to_k", nn::Linear(nn::LinearOptions(kv_dim, inner).bias(false)));
  to_v = register_module("to_v", nn::Linear(nn::LinearOptions(kv_dim, inner).bias(false)));
  to_out = nn::Linear(inner, query_dim);
  register_module("to_out", holder())->register_module("0", to_out);
}

torch::Tensor CrossAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context, const Hooks* hooks) {
  const int64_t B = x.size(0), L = x.size(1), H = heads_, d = dim_head_;
  torch::Tensor src = x;
  if (!self_) {
    check(context.defined() && context.dim() == 3 && context.size(0) == B,
          "attention ", sites_.q, ": cross-attention needs a context [B, L, D] with B = ", B, ", got ",
          context.defined() ? context.sizes() : torch::IntArrayRef{});
    src = context.to(x.scalar_type());
  }
  const int64_t Lk = src.size(1);
  auto q = to_q->forward(x).view({B, L, H, d}).transpose(1, 2);
  auto k = to_k->forward(src).view({B, Lk, H, d}).transpose(1, 2);
  auto v = to_v->forward(src).view({B, Lk, H, d}).transpose(1, 2);
  auto o = to_out->forward(multihead_attention(q, k, v, H, sites_, hooks));
  return hooks && sites_.any ? hooks->apply(sites_.out, o) : o;
}

torch::Tensor geglu(const torch::Tensor& x) {
  if (detail::fused_geglu_applies(x)) return detail::fused_geglu(x);  // bf16 inference: one pass, erf in fp32
  auto ag = x.chunk(2, -1);
  auto g = torch::gelu(ag[1]);
  return detail::can_inplace() ? g.mul_(ag[0]) : ag[0] * g;
}

GEGLUFeedForwardImpl::GEGLUFeedForwardImpl(int64_t dim, int64_t mult) {
  proj = nn::Linear(dim, 2 * mult * dim);
  out = nn::Linear(mult * dim, dim);
  auto net = register_module("net", holder());
  net->register_module("0", holder())->register_module("proj", proj);
  net->register_module("2", out);
}

torch::Tensor GEGLUFeedForwardImpl::forward(const torch::Tensor& x) { return out->forward(geglu(proj->forward(x))); }

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t dim_head,
                                                     int64_t context_dim, const std::string& site)
    : site_ff_(site.empty() ? "" : site + ".ff.out") {
  const std::string p = site.empty() ? "" : site + ".";
  attn1 = register_module("attn1", CrossAttention(dim, heads, dim_head, 0, site.empty() ? "" : p + "attn1"));
  ff = register_module("ff", GEGLUFeedForward(dim));
  attn2 = register_module("attn2", CrossAttention(dim, heads, dim_head, context_dim, site.empty() ? "" : p + "attn2"));
  for (auto [name, n] : {std::pair<const char*, nn::LayerNorm*>{"norm1", &norm1}, {"norm2", &norm2}, {"norm3", &norm3}})
    *n = register_module(name, nn::LayerNorm(nn::LayerNormOptions({dim}).eps(1e-5)));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x0, const torch::Tensor& context,
                                                 const Hooks* hooks) {
  auto ln = [](const nn::LayerNorm& n, const torch::Tensor& t) { return layer_norm_f32(t, 1e-5, n->weight, n->bias); };
  // Branch outputs are fresh tensors (added into in place) unless a hook may have returned its own.
  auto add = [&](const torch::Tensor& branch, const torch::Tensor& res) {
    return hooks ? branch + res : detail::add_owned(branch, res);
  };
  auto x = add(attn1->forward(ln(norm1, x0), {}, hooks), x0);
  x = add(attn2->forward(ln(norm2, x), context, hooks), x);
  auto f = ff->forward(ln(norm3, x));
  if (hooks && !site_ff_.empty()) f = hooks->apply(site_ff_, f);
  return add(f, x);
}

SpatialTransformerImpl::SpatialTransformerImpl(const SpatialTransformerOptions& o, const std::string& site) : o_(o) {
  const int64_t C = o.channels, inner = o.heads * o.dim_head;
  check(C >= 1 && o.depth >= 1, "SpatialTransformer ", site, ": needs channels >= 1 and depth >= 1");
  norm = register_module("norm", GroupNorm32(o.groups, C, 1e-6));
  if (o.use_linear)
    proj_in_linear = register_module("proj_in", nn::Linear(C, inner));
  else
    proj_in_conv = register_module("proj_in", nn::Conv2d(nn::Conv2dOptions(C, inner, 1)));
  auto list = register_module("transformer_blocks", nn::ModuleList());
  for (int64_t i = 0; i < o.depth; ++i) {
    blocks.push_back(BasicTransformerBlock(inner, o.heads, o.dim_head, o.context_dim,
                                           site.empty() ? "" : site + ".transformer_blocks." + std::to_string(i)));
    list->push_back(blocks.back());
  }
  torch::NoGradGuard g;
  if (o.use_linear) {
    proj_out_linear = register_module("proj_out", nn::Linear(inner, C));
    proj_out_linear->weight.zero_();
    proj_out_linear->bias.zero_();
  } else {
    proj_out_conv = register_module("proj_out", nn::Conv2d(nn::Conv2dOptions(inner, C, 1)));
    proj_out_conv->weight.zero_();
    proj_out_conv->bias.zero_();
  }
}

torch::Tensor SpatialTransformerImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                              const Hooks* hooks) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), inner = o_.heads * o_.dim_head;
  auto h = norm->forward(x);
  if (proj_in_conv) h = proj_in_conv->forward(h);
  // NCHW -> tokens [B, H*W, C]: a view when h is channels_last.
  auto t = h.permute({0, 2, 3, 1}).reshape({B, H * W, proj_in_conv ? inner : o_.channels});
  if (proj_in_linear) t = proj_in_linear->forward(t);
  for (auto& b : blocks) t = b->forward(t, context, hooks);
  if (proj_out_linear) t = proj_out_linear->forward(t);
  h = t.reshape({B, H, W, t.size(2)}).permute({0, 3, 1, 2});  // channels_last-strided NCHW view
  if (proj_out_conv) h = proj_out_conv->forward(h);
  return detail::can_inplace() && h.is_contiguous(x.suggest_memory_format()) ? h.add_(x) : h + x;
}

}  // namespace tweedie
