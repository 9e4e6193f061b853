// Shared by `tweedie eval` and `tweedie bench fid`: the classifier-backed
// Evaluator and class-balanced generation from a model.
#pragma once
#include <memory>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "model_spec.h"
#include "tweedie/eval/attention_share.h"
#include "tweedie/eval/canvas_judge.h"
#include "tweedie/guide/guidance.h"
#include "tweedie/eval/evaluator.h"
#include "tweedie/sample/generate.h"

namespace tweedie::cli {

// Load the classifier (default_classifier_path() if empty) and the reference
// set's feature statistics.
std::unique_ptr<Evaluator> make_evaluator(const std::string& classifier_path, const std::string& reference);

// n class-balanced samples (labels i mod K for a K-class model, none for an
// unconditional one) under guidance g (CFG needs a class-conditional model),
// from seeded noise.
struct BalancedSamples {
  torch::Tensor images, labels;
  int nfe = 0;
};
BalancedSamples generate_balanced(const LoadedModel& model, const SamplerInfo& sampler, const std::vector<double>& sigmas,
                                  int64_t n, const GuidanceOptions& g, uint64_t seed, const GenerateOptions& opt);

// The model must produce what the classifier judges: same image shape and classes.
void check_model_fits(const LoadedModel& model, const Evaluator& ev, const std::string& model_path);

// ---- FashionCanvas text models (`tweedie eval` / `tweedie bench canvas`) ----

// The judge with the shipped classifier (or classifier_path).
CanvasJudge make_canvas_judge(const std::string& classifier_path);

// Images [N, 3, H, W] in [-1, 1] for one prompt each: base's sampler, steps,
// CFG and size; chunk k of `batch` prompts uses seed base.seed + k.
// before_chunk(first, count) runs before each chunk is sampled.
torch::Tensor generate_prompts(StableDiffusion& sd, const std::vector<std::string>& prompts, SdRequest base,
                               int64_t batch, const std::function<void(int64_t images_done)>& progress = {},
                               const std::function<void(int64_t first, int64_t count)>& before_chunk = {});

// The cross-attention targets of layouts[first, first + count): each item's
// name tokens and its cell, rows 0..count-1 (eval/attention_share.h).
std::vector<AttentionTarget> canvas_attention_targets(const StableDiffusion& sd, const std::vector<CanvasLayout>& layouts,
                                                      int64_t first, int64_t count);
// The table of shares per layer and step range (thirds of the steps), and as JSON.
void print_attention_shares(const AttentionShare& a, int steps);
nlohmann::json attention_shares_json(const AttentionShare& a, int steps);

// Generated images judged against their layouts, the same judge on the
// test-split canvases of the same layouts (the reference: what a perfect
// model would score), and FID between the two sets' canvas features.
struct CanvasEval {
  CanvasScore generated, reference;
  double fid = 0;
};
CanvasEval evaluate_canvases(const CanvasJudge& judge, const std::vector<CanvasLayout>& layouts,
                             const torch::Tensor& images, uint64_t reference_seed);

// The report lines `tweedie eval` prints, and the same as JSON.
void print_canvas_eval(const CanvasEval& e);
nlohmann::json canvas_eval_json(const CanvasEval& e);

}  // namespace tweedie::cli
