// Plug-and-Play (Tumanyan, Geyer, Bagon & Dekel 2023, "Plug-and-Play
// Diffusion Features for Text-Driven Image-to-Image Translation", CVPR).
//
// The source is sampled beside the target (edit/paired_sampling.h): a real
// image inverted under the source prompt (the empty prompt when none is
// given, as the paper) and, with direct inversion, kept exactly on that
// path; or a source generated from a seed. The target, under its own
// prompt from the same starting latent, takes the source's
//   spatial features: the output of the decoder's second-stage second
//     residual block (SD 1.x: output_blocks.4.0, the paper's layer 4), for
//     the first `features` of the steps (0.8);
//   self-attention: the queries and keys of the decoder's self-attention
//     layers from that block on (SD 1.x: output_blocks 4-11, the paper's
//     layers 4-11), for the first `attention` of the steps (0.5);
// in both CFG branches (source cond rows into target cond rows, uncond into
// uncond). Structure comes from the source, appearance from the target
// prompt. The blocks are found from the network's own layout (one
// observing call), so any SD UNet works.
// Verified in tests/test_attention_edits.cpp.
#pragma once
#include <string>
#include <vector>

#include <torch/types.h>

#include "tweedie/edit/paired_sampling.h"

namespace tweedie {

struct PlugAndPlayOptions {
  double features = 0.8;   // share of the steps with the source's residual features injected
  double attention = 0.5;  // share of the steps with the source's self-attention queries and keys injected
  PairedOptions pair;      // cfg, sampler, strength, inversion
  PairObserver on_inject;  // every call at the injected sites (feature site, "<layer>.q", "<layer>.k")
};

struct PlugAndPlayResult {
  torch::Tensor source, edited;           // float64 [N, ...]
  std::string feature_site;               // e.g. "output_blocks.4.0.out"
  std::vector<std::string> attention_layers;
};

PlugAndPlayResult plug_and_play(const DenoiserPtr& model, const std::vector<double>& sigmas, const torch::Tensor& x,
                                bool from_noise, const Cond& source, const Cond& target, const PlugAndPlayOptions& o,
                                torch::Generator gen = {});

}  // namespace tweedie
