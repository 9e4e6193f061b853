// tweedie edit: change images with a training-free method (SDEdit, DDIB,
// edit-friendly DDPM, CycleDiffusion, DiffEdit, ILVR, Prompt-to-Prompt;
// include/tweedie/edit/) on a pretrained class-conditional model
// (--from/--to classes; the edits are judged with the evaluation
// classifier) or a text-conditioned latent model (--source-prompt/
// --target-prompt; images are encoded with its VAE, edited as latents and
// decoded, or, for methods that can, generated from --seed), and write
// source and edited images as a grid (or a folder).
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <sstream>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli.h"
#include "method_flags.h"
#include "edit_common.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/process/schedule.h"

namespace tweedie::cli {
namespace {

std::string class_name(const LoadedModel& m, int64_t k) {
  return k < int64_t(m.class_names.size()) ? m.class_names[k] : std::to_string(k);
}

// The edits as one PNG per image (DIR/) or a grid: the source row, the
// edited row and, for diffedit, the mask row (scaled up to the images).
void write_edits(const torch::Tensor& x, const torch::Tensor& edited, const torch::Tensor& mask, const std::string& params,
                 const std::string& out, bool to_dir, bool quiet) {
  const int64_t n = x.size(0);
  if (to_dir) {
    std::filesystem::create_directories(out);
    for (int64_t i = 0; i < n; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "%05ld.png", (long)i);
      Image img = tensor_to_image(edited[i]);
      img.text["parameters"] = params;
      write_png(out + (ends_with(out, "/") ? "" : "/") + name, img);
    }
  } else {
    std::vector<torch::Tensor> rows = {x, edited};
    if (mask.defined()) {
      auto m = torch::upsample_nearest2d(mask.to(torch::kFloat32), {x.size(2), x.size(3)});
      rows.push_back((m * 2 - 1).expand_as(x));
    }
    Image grid = make_grid(torch::cat(rows), int(n));
    grid.text["parameters"] = params;
    write_png(out, grid);
  }
  if (!quiet) std::fprintf(stderr, "wrote %s\n", out.c_str());
}

// A text model: images -> latents (VAE), the edit between the prompts'
// conditions, latents -> images. Without --input (methods that generate
// their source): the source is sampled from the seed's noise, as `tweedie
// generate` draws it.
int edit_text(const Args& a, const EditSettings& e, const EditMethodInfo& method, const LoadedModel& model, int steps,
              const std::string& out, bool to_dir) {
  torch::NoGradGuard no_grad;
  const bool from_noise = !a.has("input");
  torch::Tensor images, x;
  int64_t n = 0, height = 0, width = 0;
  if (from_noise) {
    const std::vector<int64_t> shape = model.image_shape();
    height = a.has("height") ? a.integer("height") : shape[1];
    width = a.has("width") ? a.integer("width") : shape[2];
    const int64_t step = model.size_multiple();
    check(height >= step && width >= step && height % step == 0 && width % step == 0, "tweedie edit: --width and "
          "--height must be positive multiples of ", step, " (got ", width, "x", height, ")");
    n = a.integer("num");
    check(n >= 1, "tweedie edit: -n must be >= 1 (got ", n, ")");
    auto gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t(a.integer("seed")));
    const int64_t down = model.sd->downscale();
    x = at::randn({n, model.sample_shape[0], height / down, width / down}, gen, torch::kFloat32);
  } else {
    images = load_input_images(a.str("input"), model, "tweedie edit");
    n = images.size(0), height = images.size(2), width = images.size(3);
    x = model.encode(images);
  }
  const bool has_src = a.has("source-prompt");
  const auto conds = model.prompt_conditions({has_src ? a.str("source-prompt") : "", a.str("target-prompt")},
                                             a.str("negative-prompt"), n, height, width);
  // Methods acting inside the network sample a source branch: without --source-prompt, the empty prompt's.
  const Cond src = has_src || method.text_only ? conds[0] : Cond{}, tgt = conds[1];
  const std::vector<double> sigmas = make_schedule(a.str("schedule"), model.denoiser->process(), steps);
  if (!a.has("quiet"))
    std::fprintf(stderr, "edit %s: %ld image(s) %ldx%ld%s, '%s' -> '%s', %d steps...\n", e.method.c_str(), (long)n,
                 (long)width, (long)height, from_noise ? " generated" : "", a.str("source-prompt").c_str(),
                 a.str("target-prompt").c_str(), steps);
  EditWords words;
  if (method.text_only) {
    words.source = model.sd->word_positions(a.str("source-prompt"));
    words.target = model.sd->word_positions(a.str("target-prompt"));
  }
  words.from_noise = from_noise;
  EditOutput r = run_edit(e, model, sigmas, x, src, tgt, uint64_t(a.integer("seed")), words);
  check(torch::isfinite(r.edited).all().item<bool>(), "the edit produced non-finite values");
  const torch::Tensor edited = model.decode(r.edited);
  if (from_noise) images = model.decode(r.source);
  const Difference d = difference(edited, images), dl = difference(r.edited, from_noise ? r.source : x);
  std::printf("%s: %ld image(s) edited toward '%s'; RMSE to the source: images %.3f, latents %.3f\n", e.method.c_str(),
              (long)n, a.str("target-prompt").c_str(), d.rmse, dl.rmse);
  if (r.mask.defined())
    std::printf("%s: the mask covers %.1f%% of the latent\n", e.method.c_str(), 100.0 * r.mask.mean().item<double>());
  const std::string params = a.str("target-prompt") + "\nedit --method " + e.method +
                             (has_src ? " --source-prompt \"" + a.str("source-prompt") + "\"" : "") + " --cfg " +
                             a.str("cfg") + " --steps " + std::to_string(steps) + " --seed " + a.str("seed");
  write_edits(images, edited, r.mask, params, out, to_dir, a.has("quiet"));
  return 0;
}

// "a, b, c" of the methods for which pick(m) holds.
template <class Pick>
std::string methods_where(Pick pick) {
  std::string s;
  for (const EditMethodInfo& m : edit_methods())
    if (pick(m)) s += (s.empty() ? "" : ", ") + m.name;
  return s;
}

// The registered methods' own options, one flag each (method_flags.h).
DeclaredOptions declared_options() {
  DeclaredOptions out;
  for (const EditMethodInfo& m : edit_methods()) out.push_back({m.name, &m.options});
  return out;
}

int run(int argc, char** argv) {
  const std::string methods = registry<EditMethodInfo>().names("|");
  std::string strengths;
  for (const EditMethodInfo& m : edit_methods())
    if (m.uses_strength) {
      std::ostringstream s;
      s << m.name << " " << m.default_strength;
      strengths += (strengths.empty() ? "" : ", ") + s.str();
    }
  std::string samplers;
  for (const EditMethodInfo& m : edit_methods())
    if (m.takes_sampler && samplers.find(m.sampler) == std::string::npos) {
      const std::string who = methods_where([&](const EditMethodInfo& k) { return k.takes_sampler && k.sampler == m.sampler; });
      samplers += (samplers.empty() ? "" : "; ") + m.sampler + " for " + who;
    }
  std::vector<Args::Opt> opts = {
             {"method", "", false, "edit method: " + methods, ""},
             {"from", "", false, "source class (name or index); needed by ddib, ddpm, cycle, diffedit and --test-images", ""},
             {"to", "", false, "target class (name or index)", ""},
             {"input", "i", false, "image(s) to edit: a PNG or a folder of PNGs, each of the model's size (a class "
                                   "model's own; text models: any multiple of their size step)", ""},
             {"test-images", "", false, "edit the first N Fashion-MNIST test images of the --from class", ""},
             {"output", "o", false, "OUT.png (grid: source row, edited row, and the mask row for diffedit) or DIR/ (one PNG per edit)", ""},
             {"model", "m", false, "model file (.safetensors; default: the shipped Fashion-MNIST model, or with "
                                   "prompts the FashionCanvas text model) or a Stable Diffusion checkpoint (file or "
                                   "diffusers folder)", ""},
             {"strength", "", false, "fraction of the schedule to re-run, in [0, 1] (default: " + strengths + ")", ""},
             {"cfg", "", false, "classifier-free guidance scale toward the target", "3"},
             {"steps", "s", false, "number of steps", "20"},
             {"schedule", "", false, "step schedule (see 'tweedie samplers')", "karras"},
             {"sampler", "", false, "sampler (default: " + samplers + "; " +
                                        methods_where([](const EditMethodInfo& m) { return m.sampler_must_invert; }) +
                                        " need an invertible one; " +
                                        methods_where([](const EditMethodInfo& m) { return !m.takes_sampler; }) +
                                        " decode with their own noises)", ""},
             {"classifier", "", false, "evaluation classifier (default: the shipped one)", ""},
             {"seed", "", false, "random seed", "0"},
             {"quiet", "q", true, "no progress on stderr", ""},
             {"source-prompt", "", false, "text models: what the input shows (needed by ddib, ddpm, cycle, diffedit)", ""},
             {"target-prompt", "", false, "text models: what the edit should show", ""},
             {"negative-prompt", "", false, "text models: CFG's negative prompt", ""},
             {"num", "n", false, "text models without --input (" +
                                     methods_where([](const EditMethodInfo& m) { return m.seeds; }) +
                                     "): sources to generate from the seed", "1"},
             {"width", "W", false, "text models without --input: image width (default: the model's native size)", ""},
             {"height", "H", false, "text models without --input: image height (default: the model's native size)", ""},
  };
  const auto method_opts = declared_option_flags(declared_options()), text_opts = text_model_opts();
  opts.insert(opts.end(), method_opts.begin(), method_opts.end());
  opts.insert(opts.end(), text_opts.begin(), text_opts.end());
  Args a("edit",
         "--method M (--to CLASS [--from CLASS] | --target-prompt P [--source-prompt P]) (-i IN.png|DIR | --test-images "
         "N | a seed: " + methods_where([](const EditMethodInfo& m) { return m.seeds; }) + ") -o OUT.png|DIR/ [options]",
         opts);
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie edit: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("method"), "tweedie edit: --method is required (", methods, ")");
  EditSettings e;
  e.method = a.str("method");
  const EditMethodInfo& method = find_edit_method(e.method);
  std::string spec = a.str("model");
  if (spec.empty()) {  // prompts: the default text model (FashionCanvas), else the class model
    spec = a.has("target-prompt") || a.has("source-prompt") ? default_text_model_path() : default_model_path();
    check(std::ifstream(spec).good(), "tweedie edit: no --model given and the default model ", spec, " is missing");
  }
  const bool text = is_text_model(spec);
  if (text) {
    check(!a.has("to") && !a.has("from") && !a.has("test-images") && !a.has("classifier"), "tweedie edit: ", spec,
          " is a text model: give --source-prompt/--target-prompt and --input, not --from/--to/--test-images/--classifier");
    check(a.has("target-prompt"), "tweedie edit: --target-prompt is required (what the edit should show)");
    check(!method.source || a.has("source-prompt"), "tweedie edit: --method ", e.method,
          " needs --source-prompt (what the input shows)");
    check(a.has("input") || method.seeds, "tweedie edit: --method ", e.method, " edits images: give --input (",
          methods_where([](const EditMethodInfo& m) { return m.seeds; }), " can generate the source from --seed)");
    check(!a.has("input") || (!a.has("num") && !a.has("width") && !a.has("height")),
          "tweedie edit: -n, --width and --height size a generated source; with --input the images give them");
    check(a.has("input") || !a.has("strength"), "tweedie edit: --strength applies to --input images (a generated source "
          "is sampled over the whole schedule)");
  } else {
    check(!method.text_only, "tweedie edit: --method ", e.method, " edits by prompts' words and needs a text model (",
          spec, " is not one)");
    check(!a.has("num") && !a.has("width") && !a.has("height"), "tweedie edit: -n, --width and --height need a text "
          "model");
    check(!a.has("source-prompt") && !a.has("target-prompt") && !a.has("negative-prompt"), "tweedie edit: prompts need "
          "a text model (", spec, " is not one)");
    check(a.has("to"), "tweedie edit: --to is required (the target class)");
    check(!method.source || a.has("from"), "tweedie edit: --method ", e.method, " needs --from (the source class)");
  }
  check(!(a.has("input") && a.has("test-images")), "tweedie edit: give either --input or --test-images");
  check(text || a.has("input") || a.has("test-images"), "tweedie edit: give either --input or --test-images");
  check(!a.has("test-images") || a.has("from"), "tweedie edit: --test-images needs --from (the class of the images)");
  check(a.has("output"), "tweedie edit: --output is required (.png or DIR/)");
  const std::string out = a.str("output");
  const bool to_dir = ends_with(out, "/") || is_directory(out);
  check(to_dir || ends_with(out, ".png"), "tweedie edit: --output must end in .png or /, got '", out, "'");
  if (a.has("strength")) {
    e.strength = a.number("strength");
    check(e.strength >= 0 && e.strength <= 1, "tweedie edit: --strength must be in [0, 1] (got ", a.str("strength"), ")");
    check(method.uses_strength, "tweedie edit: --strength does not apply to ", e.method, " (it samples from noise)");
  }
  e.cfg = a.number("cfg");
  check(std::isfinite(e.cfg), "tweedie edit: --cfg must be finite");
  e.sampler = a.str("sampler");
  if (!e.sampler.empty()) {
    const SamplerInfo& s = find_sampler(e.sampler);
    if (method.sampler_must_invert && (a.has("input") || a.has("test-images"))) require_invertible(s);
    check(method.takes_sampler, "tweedie edit: --sampler does not apply to ", e.method,
          " (it decodes with its own noises)");
  }
  e.options = given_option_values(a, declared_options(), e.method, "tweedie edit")
                  .values_for(method.options, "tweedie edit --method " + e.method);
  const int steps = a.integer("steps");
  check(steps >= 1, "tweedie edit: --steps must be >= 1 (got ", steps, ")");

  LoadedModel model = load_model(spec, "", "", text_model_options(a));
  if (text) return edit_text(a, e, method, model, steps, out, to_dir);
  check(model.num_classes > 0, "tweedie edit: ", spec, " is not class-conditional");
  const int64_t to = class_labels(model, a.str("to"), 1)[0].item<int64_t>();
  const int64_t from = a.has("from") ? class_labels(model, a.str("from"), 1)[0].item<int64_t>() : -1;
  torch::Tensor x = a.has("test-images") ? fashion_mnist_test_images(a.integer("test-images"), from, model, "tweedie edit").images
                                         : load_input_images(a.str("input"), model, "tweedie edit");
  auto clf = load_classifier(a.str("classifier"));
  check(clf->num_classes() == model.num_classes, "tweedie edit: the classifier has ", clf->num_classes(),
        " classes, the model ", model.num_classes);

  torch::NoGradGuard no_grad;
  const std::vector<double> sigmas = make_schedule(a.str("schedule"), model.denoiser->process(), steps);
  if (!a.has("quiet")) std::fprintf(stderr, "edit %s: %ld image(s), %s -> %s, %d steps...\n", e.method.c_str(),
                                    (long)x.size(0), from >= 0 ? class_name(model, from).c_str() : "?",
                                    class_name(model, to).c_str(), steps);
  EditOutput r = run_edit(e, model, sigmas, x, class_condition(from, x.size(0)), class_condition(to, x.size(0)),
                          uint64_t(a.integer("seed")));
  check(torch::isfinite(r.edited).all().item<bool>(), "the edit produced non-finite values");
  const torch::Tensor edited = r.edited.clamp(-1, 1);

  auto p_src = class_probabilities(*clf, x), p_out = class_probabilities(*clf, edited);
  const int64_t n = x.size(0);
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ks = p_src[i].argmax().item<int64_t>(), ko = p_out[i].argmax().item<int64_t>();
    hits += ko == to;
    std::printf("image %ld: source %s (%.2f) -> edited %s (%.2f), p(%s) %.2f -> %.2f\n", (long)i,
                class_name(model, ks).c_str(), p_src[i][ks].item<double>(), class_name(model, ko).c_str(),
                p_out[i][ko].item<double>(), class_name(model, to).c_str(), p_src[i][to].item<double>(),
                p_out[i][to].item<double>());
  }
  const Difference d = difference(edited, x);
  std::printf("%s: %ld of %ld edited images classified as %s (%.1f%%); mean p(%s) %.3f -> %.3f; RMSE to source %.3f\n",
              e.method.c_str(), (long)hits, (long)n, class_name(model, to).c_str(), 100.0 * hits / n,
              class_name(model, to).c_str(), p_src.select(1, to).mean().item<double>(),
              p_out.select(1, to).mean().item<double>(), d.rmse);

  const std::string params = "edit --method " + e.method + (from >= 0 ? " --from " + class_name(model, from) : "") +
                             " --to " + class_name(model, to) + " --cfg " + a.str("cfg") + " --steps " +
                             std::to_string(steps) + " --seed " + a.str("seed");
  write_edits(x, edited, r.mask, params, out, to_dir, a.has("quiet"));
  return 0;
}

CommandRegistrar reg({"edit", "edit images toward another class or prompt (every registered edit method: 'tweedie edit --help')", run});

}  // namespace
}  // namespace tweedie::cli
