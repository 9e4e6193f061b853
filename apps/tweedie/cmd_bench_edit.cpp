// tweedie bench edit: inversion and editing on the default model.
//   Inversion: the round-trip error (RMSE, max abs) of every inversion method
//     at CFG 1 and 3 on the first --num Fashion-MNIST test images (their own
//     class as the condition; null-text on the first --num-null-text, it
//     optimizes per step), with NFE and seconds.
//   Editing: for class pairs (--pairs), every edit method on the first
//     --edit-num test images of the source class: the fraction the shipped
//     classifier assigns the target class, the mean target probability, the
//     fraction still classified as the source, and the RMSE to the source.
// Writes edit.md and edit_examples.png (per pair: the source row, then one
// row per method in the table's order).
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <sstream>

#include "bench_common.h"
#include "cli.h"
#include "edit_common.h"
#include "tweedie/core/error.h"
#include "tweedie/edit/inversion.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/process/schedule.h"

namespace tweedie::cli {
namespace {


int bench_edit(int argc, char** argv) {
  Args a("bench edit", "[options]",
         {
             {"model", "m", false, "model file (default: the shipped Fashion-MNIST model)", ""},
             {"classifier", "", false, "classifier model file (default: the shipped one)", ""},
             {"num", "n", false, "test images for the inversion table", "64"},
             {"num-null-text", "", false, "test images for null-text inversion (slow: Adam per step)", "16"},
             {"inversions", "", false, "comma-separated inversion methods", "ddim,edict,fixed-point,negative-prompt,null-text,ddpm,cycle"},
             {"edits", "", false, "comma-separated edit methods", "sdedit,ddib,ddpm,cycle,diffedit,ilvr"},
             {"pairs", "", false, "comma-separated FROM:TO class pairs", "sneaker:sandal,t-shirt:shirt,pullover:coat"},
             {"edit-num", "", false, "images per class pair", "32"},
             {"steps", "s", false, "steps of every inversion and edit", "20"},
             {"schedule", "", false, "step schedule", "karras"},
             {"cfg", "", false, "guidance scale of the edits", "3"},
             {"seed", "", false, "random seed", "0"},
             {"out", "o", false, "output directory for edit.md and edit_examples.png", "bench/results"},
             {"quiet", "q", true, "no progress on stderr", ""},
         });
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie bench edit: unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  const std::string outdir = a.str("out");
  check(is_directory(outdir), "tweedie bench edit: output directory '", outdir, "' does not exist");
  const int steps = a.integer("steps");
  check(steps >= 2, "tweedie bench edit: --steps must be >= 2");
  const std::vector<std::string> inversions = split(a.str("inversions")), edits = split(a.str("edits"));
  for (auto& m : inversions) find_inversion_method(m);
  for (auto& m : edits) find_edit_method(m);
  const std::string spec = a.has("model") ? a.str("model") : default_model_path();
  LoadedModel model = load_model(spec, "", "");
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (auto& p : split(a.str("pairs"))) {
    const auto colon = p.find(':');
    check(colon != std::string::npos, "tweedie bench edit: --pairs entry '", p, "' is not FROM:TO");
    pairs.emplace_back(class_labels(model, p.substr(0, colon), 1)[0].item<int64_t>(),
                       class_labels(model, p.substr(colon + 1), 1)[0].item<int64_t>());
  }
  auto clf = load_classifier(a.str("classifier"));
  const std::vector<double> sigmas = make_schedule(a.str("schedule"), model.denoiser->process(), steps);
  const uint64_t seed = uint64_t(a.integer("seed"));
  const bool quiet = a.has("quiet");
  auto name = [&](int64_t k) { return model.class_names.empty() ? std::to_string(k) : model.class_names[k]; };
  auto fmt = [](const char* f, double v) {
    char b[48];
    std::snprintf(b, sizeof b, f, v);
    return std::string(b);
  };
  torch::NoGradGuard no_grad;

  std::ostringstream md;
  md << "Default model " << spec.substr(spec.find_last_of('/') + 1) << ", " << a.str("schedule") << " schedule, "
     << steps << " steps, seed " << seed << ".\n\n**Inversion: reconstruction error** (first " << a.str("num")
     << " Fashion-MNIST test images, each under its own class; null-text on the first " << a.str("num-null-text")
     << "; images in [-1, 1])\n\n| method | CFG | RMSE | max abs | NFE | seconds |\n|---|---|---|---|---|---|\n";
  for (auto& m : inversions) {
    const int64_t n = m == "null-text" ? a.integer("num-null-text") : a.integer("num");
    TestImages t = fashion_mnist_test_images(n, -1, model, "tweedie bench edit");
    Cond c;
    c.labels = t.labels;
    for (double w : {1.0, 3.0}) {
      InversionOptions io;
      io.cfg = w;
      io.gen = at::make_generator<at::CPUGeneratorImpl>(seed);
      Progress prog("invert " + m + " cfg " + fmt("%g", w), 2 * steps - 2, !quiet);
      int done = 0;
      io.progress = [&](int, int) { prog.update(++done); };
      const double t0 = now();
      Inversion inv = invert(m, model.denoiser, sigmas, t.images, c, io);
      const Difference d = difference(decode(model.denoiser, inv, c, io), t.images);
      const double secs = now() - t0;
      prog.finish();
      md << "| " << m << " | " << w << " | " << fmt("%.2e", d.rmse) << " | " << fmt("%.2e", d.max_abs) << " | "
         << inv.nfe << " | " << fmt("%.0f", secs) << " |\n";
      if (!quiet) std::fprintf(stderr, "%s cfg %g: RMSE %.3g\n", m.c_str(), w, d.rmse);
    }
  }

  EditSettings e;
  e.cfg = a.number("cfg");
  const int64_t en = a.integer("edit-num");
  if (!edits.empty() && !pairs.empty())
    md << "\n**Editing** (first " << en << " test images of the source class, CFG " << a.str("cfg")
       << ", default strengths: sdedit and diffedit 0.6, ddpm and cycle 0.8, ddib 1; ilvr: N = 4 from fresh noise). "
          "'to target': share the classifier assigns the target class; 'still source': share it still assigns the "
          "source class; RMSE to the source image in [-1, 1].\n\n"
          "| edit | method | to target | mean p(target) | still source | RMSE to source | seconds |\n"
          "|---|---|---|---|---|---|---|\n";
  std::vector<torch::Tensor> rows;
  const int64_t show = std::min<int64_t>(en, 8);
  for (auto [from, to] : edits.empty() ? decltype(pairs){} : pairs) {
    const torch::Tensor x = fashion_mnist_test_images(en, from, model, "tweedie bench edit").images;
    rows.push_back(x.slice(0, 0, show));
    const std::string pair = name(from) + " -> " + name(to);
    auto p0 = class_probabilities(*clf, x);
    md << "| " << pair << " | (source images) | " << fmt("%.1f%%", 100 * (p0.argmax(1) == to).to(torch::kFloat64).mean().item<double>())
       << " | " << fmt("%.3f", p0.select(1, to).mean().item<double>()) << " | "
       << fmt("%.1f%%", 100 * (p0.argmax(1) == from).to(torch::kFloat64).mean().item<double>()) << " | 0 | |\n";
    for (auto& m : edits) {
      e.method = m;
      if (!quiet) std::fprintf(stderr, "edit %s: %s...\n", pair.c_str(), m.c_str());
      const double t0 = now();
      torch::Tensor y = run_edit(e, model, sigmas, x, class_condition(from, x.size(0)), class_condition(to, x.size(0)), seed).edited.clamp(-1, 1);
      const double secs = now() - t0;
      auto p = class_probabilities(*clf, y);
      md << "| " << pair << " | " << m << " | "
         << fmt("%.1f%%", 100 * (p.argmax(1) == to).to(torch::kFloat64).mean().item<double>()) << " | "
         << fmt("%.3f", p.select(1, to).mean().item<double>()) << " | "
         << fmt("%.1f%%", 100 * (p.argmax(1) == from).to(torch::kFloat64).mean().item<double>()) << " | "
         << fmt("%.3f", difference(y, x).rmse) << " | " << fmt("%.0f", secs) << " |\n";
      rows.push_back(y.slice(0, 0, show));
    }
  }
  if (!rows.empty()) {
    Image grid = make_grid(torch::cat(rows), int(show));
    grid.text["parameters"] = "tweedie bench edit: per pair the source row, then " + a.str("edits");
    write_png(outdir + "/edit_examples.png", grid);
  }
  write_file_atomic(outdir + "/edit.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"edit", "inversion round-trip error and class edits judged by the classifier, on the default model", bench_edit});

}  // namespace
}  // namespace tweedie::cli
