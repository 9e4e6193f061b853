// Diffusers <-> original LDM parameter names for the SD UNet and VAE: the
// mapping of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py,
// written as index arithmetic over the levels instead of a table for SD1's
// four levels, so SDXL's three levels (and tiny test configs) convert too.
//
// UNet, with n = resnets per down level (layers_per_block, 2 for SD):
//   down_blocks.i.resnets.j        <-> input_blocks.(1 + i(n+1) + j).0
//   down_blocks.i.attentions.j     <-> input_blocks.(1 + i(n+1) + j).1
//   down_blocks.i.downsamplers.0.conv <-> input_blocks.((i+1)(n+1)).0.op
//   up_blocks.i.resnets.j          <-> output_blocks.(i(n+1) + j).0      (n+1 per level)
//   up_blocks.i.attentions.j       <-> output_blocks.(i(n+1) + j).1
//   up_blocks.i.upsamplers.0.conv  <-> output_blocks.(i(n+1) + n).(2 if the level has attention else 1).conv
//   mid_block.resnets.j / attentions.0 <-> middle_block.(2j) / middle_block.1
//   time_embedding.linear_1/2 <-> time_embed.0/2, add_embedding.linear_1/2 <->
//   label_emb.0.0/0.2, class_embedding <-> label_emb, conv_in <-> input_blocks.0.0,
//   conv_norm_out <-> out.0, conv_out <-> out.2; inside resnets norm1, conv1,
//   time_emb_proj, norm2, conv2, conv_shortcut <-> in_layers.0, in_layers.2,
//   emb_layers.1, out_layers.0, out_layers.3, skip_connection. Transformer
//   internals have the same names in both.
// VAE, with L levels (diffusers numbers decoder levels from the bottom):
//   {en,de}coder.down_blocks.i.resnets.j <-> down.i.block.j,
//   down_blocks.i.downsamplers.0.conv <-> down.i.downsample.conv,
//   up_blocks.i.resnets.j / upsamplers.0.conv <-> up.(L-1-i).block.j / upsample.conv,
//   mid_block.resnets.j <-> mid.block_(j+1), conv_norm_out <-> norm_out,
//   resnet conv_shortcut <-> nin_shortcut, mid_block.attentions.0.{group_norm,
//   to_q|query, to_k|key, to_v|value, to_out.0|proj_attn} <-> mid.attn_1.{norm,
//   q, k, v, proj_out} with Linear [C, C] <-> 1x1 conv [C, C, 1, 1] weights.
// Verified in tests/test_sd_checkpoint.cpp: LDM -> diffusers -> LDM is the
// identity on full key sets of SD1-like and SDXL-like UNets and a VAE, and
// literal names from diffusers' script map as it says.
#include <cstring>
#include <set>

#include "tweedie/core/error.h"
#include "tweedie/models/sd_checkpoint.h"

namespace tweedie {

namespace {

bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

std::vector<std::string> split_dots(const std::string& k) {
  std::vector<std::string> t;
  size_t b = 0;
  while (true) {
    const size_t e = k.find('.', b);
    t.push_back(k.substr(b, e - b));
    if (e == std::string::npos) return t;
    b = e + 1;
  }
}

// Token i as a small non-negative integer, or -1.
int64_t index_at(const std::vector<std::string>& t, size_t i) {
  if (i >= t.size() || t[i].empty() || t[i].size() > 6 || t[i].find_first_not_of("0123456789") != std::string::npos)
    return -1;
  return std::stoll(t[i]);
}

std::string join_from(const std::vector<std::string>& t, size_t i) {
  std::string s;
  for (; i < t.size(); ++i) s += (s.empty() ? "" : ".") + t[i];
  return s;
}

// Renames the first matching prefix of `rest` (pairs are {from, to}); nullopt if none matches.
using Pairs = std::vector<std::pair<std::string, std::string>>;
std::optional<std::string> rename(const std::string& rest, const Pairs& pairs, bool reverse) {
  for (auto& [a, b] : pairs) {
    const std::string& from = reverse ? b : a;
    const std::string& to = reverse ? a : b;
    if (starts(rest, from)) return to + rest.substr(from.size());
  }
  return std::nullopt;
}

// diffusers -> LDM (reverse = LDM -> diffusers)
const Pairs kUnetTop = {{"time_embedding.linear_1.", "time_embed.0."}, {"time_embedding.linear_2.", "time_embed.2."},
                        {"add_embedding.linear_1.", "label_emb.0.0."}, {"add_embedding.linear_2.", "label_emb.0.2."},
                        {"class_embedding.", "label_emb."},            {"conv_in.", "input_blocks.0.0."},
                        {"conv_norm_out.", "out.0."},                  {"conv_out.", "out.2."}};
const Pairs kUnetResnet = {{"norm1.", "in_layers.0."},        {"conv1.", "in_layers.2."}, {"time_emb_proj.", "emb_layers.1."},
                           {"norm2.", "out_layers.0."},       {"conv2.", "out_layers.3."},
                           {"conv_shortcut.", "skip_connection."}};
const Pairs kVaeResnet = {{"norm1.", "norm1."}, {"conv1.", "conv1."}, {"norm2.", "norm2."}, {"conv2.", "conv2."},
                          {"conv_shortcut.", "nin_shortcut."}};
const Pairs kVaeAttn = {{"group_norm.", "norm."}, {"to_q.", "q."},          {"to_k.", "k."},          {"to_v.", "v."},
                        {"to_out.0.", "proj_out."}, {"query.", "q."},       {"key.", "k."},           {"value.", "v."},
                        {"proj_attn.", "proj_out."}};

[[noreturn]] void unknown(const std::string& where, const char* what, const std::string& key) {
  fail(where, ": unexpected ", what, " key '", key, "' (not in the ", what, " layout)");
}

// Largest index + 1 at token `pos` among keys starting with `prefix` (0 if none).
int64_t count_indices(const StateDict& sd, const std::string& prefix, size_t pos) {
  int64_t n = 0;
  for (auto it = sd.lower_bound(prefix); it != sd.end() && starts(it->first, prefix); ++it)
    n = std::max(n, index_at(split_dots(it->first), pos) + 1);
  return n;
}

void put(StateDict& out, const std::string& name, const torch::Tensor& t, const std::string& where, const std::string& from) {
  if (!out.emplace(name, t).second) fail(where, ": two keys map to '", name, "' (the second is '", from, "')");
}

}  // namespace

StateDict diffusers_unet_to_ldm(const StateDict& sd, const std::string& where) {
  const int64_t n = count_indices(sd, "down_blocks.0.resnets.", 3);
  if (n == 0) fail(where, ": diffusers UNet without down_blocks.0.resnets.* (", describe_keys(sd), ")");
  std::set<int64_t> up_attn;
  for (auto& [k, v] : sd) {
    auto t = split_dots(k);
    if (t.size() > 2 && t[0] == "up_blocks" && t[2] == "attentions") up_attn.insert(index_at(t, 1));
  }
  StateDict out;
  for (auto& [k, v] : sd) {
    std::optional<std::string> name = rename(k, kUnetTop, false);
    const auto t = split_dots(k);
    const int64_t i = index_at(t, 1), j = index_at(t, 3);
    const std::string rest = join_from(t, 4);
    if (!name && t.size() > 4 && i >= 0 && j >= 0) {
      if (t[0] == "down_blocks" && t[2] == "resnets" && j < n) {
        if (auto r = rename(rest, kUnetResnet, false))
          name = "input_blocks." + std::to_string(1 + i * (n + 1) + j) + ".0." + *r;
      } else if (t[0] == "down_blocks" && t[2] == "attentions" && j < n) {
        name = "input_blocks." + std::to_string(1 + i * (n + 1) + j) + ".1." + rest;
      } else if (t[0] == "down_blocks" && t[2] == "downsamplers" && j == 0 && t[4] == "conv") {
        name = "input_blocks." + std::to_string((i + 1) * (n + 1)) + ".0.op." + join_from(t, 5);
      } else if (t[0] == "up_blocks" && t[2] == "resnets" && j <= n) {
        if (auto r = rename(rest, kUnetResnet, false))
          name = "output_blocks." + std::to_string(i * (n + 1) + j) + ".0." + *r;
      } else if (t[0] == "up_blocks" && t[2] == "attentions" && j <= n) {
        name = "output_blocks." + std::to_string(i * (n + 1) + j) + ".1." + rest;
      } else if (t[0] == "up_blocks" && t[2] == "upsamplers" && j == 0 && t[4] == "conv") {
        name = "output_blocks." + std::to_string(i * (n + 1) + n) + (up_attn.count(i) ? ".2." : ".1.") + "conv." +
               join_from(t, 5);
      }
    }
    if (!name && t.size() > 3 && t[0] == "mid_block" && index_at(t, 2) >= 0) {
      const int64_t m = index_at(t, 2);
      if (t[1] == "resnets" && m < 2) {
        if (auto r = rename(join_from(t, 3), kUnetResnet, false)) name = "middle_block." + std::to_string(2 * m) + "." + *r;
      } else if (t[1] == "attentions" && m == 0) {
        name = "middle_block.1." + join_from(t, 3);
      }
    }
    if (!name) unknown(where, "diffusers UNet", k);
    put(out, *name, v, where, k);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> ldm_unet_diffusers_names(const StateDict& sd, const std::string& where) {
  // n from the first downsampler input_blocks.(n+1).0.op (one level: every input block is a resnet)
  int64_t n = -1;
  for (auto& [k, v] : sd) {
    const auto t = split_dots(k);
    if (t.size() > 3 && t[0] == "input_blocks" && t[3] == "op" && index_at(t, 1) > 0)
      n = n < 0 ? index_at(t, 1) - 1 : std::min(n, index_at(t, 1) - 1);
  }
  if (n < 0) n = count_indices(sd, "input_blocks.", 1) - 1;
  if (n < 1) fail(where, ": LDM UNet without input_blocks.* (", describe_keys(sd), ")");
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [k, v] : sd) {
    const auto t = split_dots(k);
    const int64_t b = index_at(t, 1), m = index_at(t, 2);
    const std::string rest = join_from(t, 3);
    std::optional<std::string> name;
    if (!(t[0] == "input_blocks" && b == 0)) name = rename(k, kUnetTop, true);
    if (!name && t.size() > 3 && b >= 0 && m >= 0) {
      if (t[0] == "input_blocks" && b == 0 && m == 0) {
        name = "conv_in." + rest;
      } else if (t[0] == "input_blocks" && b > 0) {
        const int64_t i = (b - 1) / (n + 1), j = (b - 1) % (n + 1);
        const std::string lv = std::to_string(i) + ".";
        if (j == n && m == 0 && t[3] == "op") name = "down_blocks." + lv + "downsamplers.0.conv." + join_from(t, 4);
        else if (j < n && m == 0) {
          if (auto r = rename(rest, kUnetResnet, true)) name = "down_blocks." + lv + "resnets." + std::to_string(j) + "." + *r;
        } else if (j < n && m == 1) {
          name = "down_blocks." + lv + "attentions." + std::to_string(j) + "." + rest;
        }
      } else if (t[0] == "output_blocks") {
        const int64_t i = b / (n + 1), j = b % (n + 1);
        const std::string lv = std::to_string(i) + ".";
        const bool up = t[3] == "conv" && j == n && (m == 2 || m == 1);
        if (m == 0) {
          if (auto r = rename(rest, kUnetResnet, true)) name = "up_blocks." + lv + "resnets." + std::to_string(j) + "." + *r;
        } else if (up) {
          name = "up_blocks." + lv + "upsamplers.0." + rest;
        } else if (m == 1) {
          name = "up_blocks." + lv + "attentions." + std::to_string(j) + "." + rest;
        }
      }
    } else if (!name && t.size() > 2 && t[0] == "middle_block" && b >= 0 && b <= 2) {
      if (b == 1) name = "mid_block.attentions.0." + join_from(t, 2);
      else if (auto r = rename(join_from(t, 2), kUnetResnet, true)) name = "mid_block.resnets." + std::to_string(b / 2) + "." + *r;
    }
    if (!name) unknown(where, "LDM UNet", k);
    out.emplace_back(k, *name);
  }
  return out;
}

StateDict ldm_unet_to_diffusers(const StateDict& sd, const std::string& where) {
  StateDict out;
  for (auto& [ldm, diffusers] : ldm_unet_diffusers_names(sd, where)) put(out, diffusers, sd.at(ldm), where, ldm);
  return out;
}

namespace {

// One VAE key in either direction; `levels` = number of decoder levels.
std::optional<std::string> vae_key(const std::string& k, int64_t levels, bool to_ldm) {
  if (starts(k, "quant_conv.") || starts(k, "post_quant_conv.")) return k;
  const auto t = split_dots(k);
  if (t.size() < 3 || (t[0] != "encoder" && t[0] != "decoder")) return std::nullopt;
  const std::string part = t[0] + ".";
  const std::string r = join_from(t, 1);
  for (const char* same : {"conv_in.", "conv_out."})
    if (starts(r, same)) return k;
  if (to_ldm && starts(r, "conv_norm_out.")) return part + "norm_out." + r.substr(14);
  if (!to_ldm && starts(r, "norm_out.")) return part + "conv_norm_out." + r.substr(9);
  const int64_t i = index_at(t, 2), j = index_at(t, 4);
  if (to_ldm) {
    if (t.size() > 5 && i >= 0 && j >= 0 && t[3] == "resnets" && (t[1] == "down_blocks" || t[1] == "up_blocks")) {
      auto rr = rename(join_from(t, 5), kVaeResnet, false);
      if (!rr) return std::nullopt;
      const int64_t lvl = t[1] == "down_blocks" ? i : levels - 1 - i;
      return part + (t[1] == "down_blocks" ? "down." : "up.") + std::to_string(lvl) + ".block." + std::to_string(j) + "." + *rr;
    }
    if (t.size() > 5 && i >= 0 && j == 0 && t[5] == "conv" && t[3] == "downsamplers" && t[1] == "down_blocks")
      return part + "down." + std::to_string(i) + ".downsample." + join_from(t, 5);
    if (t.size() > 5 && i >= 0 && j == 0 && t[5] == "conv" && t[3] == "upsamplers" && t[1] == "up_blocks")
      return part + "up." + std::to_string(levels - 1 - i) + ".upsample." + join_from(t, 5);
    if (t.size() > 3 && t[1] == "mid_block" && t[2] == "resnets" && index_at(t, 3) >= 0 && index_at(t, 3) < 2) {
      auto rr = rename(join_from(t, 4), kVaeResnet, false);
      if (rr) return part + "mid.block_" + std::to_string(index_at(t, 3) + 1) + "." + *rr;
    }
    if (t.size() > 4 && t[1] == "mid_block" && t[2] == "attentions" && t[3] == "0") {
      auto rr = rename(join_from(t, 4), kVaeAttn, false);
      if (rr) return part + "mid.attn_1." + *rr;
    }
    return std::nullopt;
  }
  // LDM -> diffusers: encoder.down.i.block.j / downsample, decoder.up.i.block.j / upsample, mid.*
  if (t.size() > 5 && i >= 0 && j >= 0 && t[3] == "block" && (t[1] == "down" || t[1] == "up")) {
    auto rr = rename(join_from(t, 5), kVaeResnet, true);
    if (!rr) return std::nullopt;
    const int64_t lvl = t[1] == "down" ? i : levels - 1 - i;
    return part + (t[1] == "down" ? "down_blocks." : "up_blocks.") + std::to_string(lvl) + ".resnets." + std::to_string(j) + "." + *rr;
  }
  if (t.size() > 4 && i >= 0 && t[4] == "conv" && t[1] == "down" && t[3] == "downsample")
    return part + "down_blocks." + std::to_string(i) + ".downsamplers.0." + join_from(t, 4);
  if (t.size() > 4 && i >= 0 && t[4] == "conv" && t[1] == "up" && t[3] == "upsample")
    return part + "up_blocks." + std::to_string(levels - 1 - i) + ".upsamplers.0." + join_from(t, 4);
  if (t.size() > 3 && t[1] == "mid" && (t[2] == "block_1" || t[2] == "block_2")) {
    auto rr = rename(join_from(t, 3), kVaeResnet, true);
    if (rr) return part + "mid_block.resnets." + (t[2] == "block_1" ? "0." : "1.") + *rr;
  }
  if (t.size() > 3 && t[1] == "mid" && t[2] == "attn_1") {
    const Pairs modern(kVaeAttn.begin(), kVaeAttn.begin() + 5);  // to_q/to_k/to_v/to_out.0 spelling
    auto rr = rename(join_from(t, 3), modern, true);
    if (rr) return part + "mid_block.attentions.0." + *rr;
  }
  return std::nullopt;
}

bool is_vae_attn_matrix(const std::string& ldm_name) {
  for (const char* s : {"mid.attn_1.q.weight", "mid.attn_1.k.weight", "mid.attn_1.v.weight", "mid.attn_1.proj_out.weight"})
    if (ldm_name.size() >= std::strlen(s) && ldm_name.compare(ldm_name.size() - std::strlen(s), std::string::npos, s) == 0)
      return true;
  return false;
}

}  // namespace

namespace {

StateDict convert_vae(const StateDict& sd, const std::string& where, bool to_ldm) {
  const int64_t levels = count_indices(sd, to_ldm ? "decoder.up_blocks." : "decoder.up.", 2);
  StateDict out;
  for (auto& [k, v] : sd) {
    auto name = vae_key(k, levels, to_ldm);
    if (!name) unknown(where, to_ldm ? "diffusers VAE" : "LDM VAE", k);
    torch::Tensor t = v;
    if (is_vae_attn_matrix(to_ldm ? *name : k)) {  // Linear [C, C] <-> 1x1 conv [C, C, 1, 1]
      if (to_ldm && v.dim() == 2) t = v.reshape({v.size(0), v.size(1), 1, 1});
      if (!to_ldm && v.dim() == 4) t = v.reshape({v.size(0), v.size(1)});
    }
    put(out, *name, t, where, k);
  }
  return out;
}

}  // namespace

StateDict diffusers_vae_to_ldm(const StateDict& sd, const std::string& where) { return convert_vae(sd, where, true); }
StateDict ldm_vae_to_diffusers(const StateDict& sd, const std::string& where) { return convert_vae(sd, where, false); }

}  // namespace tweedie
