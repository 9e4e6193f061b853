// tweedie bench fid: FID and class accuracy of a model's samples versus NFE
// for several samplers (the same seeded noise for every run), judged by the
// shipped classifier (eval_common.h). Writes fid.md and fid.png.
#include <ATen/CPUGeneratorImpl.h>


#include <cmath>
#include <cstdio>
#include <sstream>

#include "bench_common.h"
#include "cli.h"
#include "eval_common.h"
#include "guidance_args.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/plot.h"

namespace tweedie::cli {
namespace {

int bench_fid(int argc, char** argv) {
  std::vector<Args::Opt> opts = {
      {"model", "m", false, "model file (default: the shipped Fashion-MNIST model)", ""},
      {"classifier", "", false, "classifier model file (default: models/fashion_mnist_classifier.safetensors)", ""},
      {"reference", "", false, "reference images", "fashion-mnist:test"},
      {"samplers", "", false, "comma-separated samplers", "ddim,euler,heun,dpmpp-2m,unipc-bh2,deis"},
      {"schedule", "", false, "step schedule", "karras"},
      {"nfe", "", false, "comma-separated NFE budgets", "10,20,50"},
      {"num", "n", false, "samples per run (class-balanced)", "1000"},
      {"cfg", "", false, "classifier-free guidance scale", "3"},
      {"batch", "", false, "samples per sampler run", "250"},
      {"seed", "", false, "random seed (the same noise for every run)", "0"},
      {"out", "o", false, "output directory for fid.md and fid.png", "bench/results"},
      {"quiet", "q", true, "no progress on stderr", ""},
  };
  auto gopts = guidance_opts();
  opts.insert(opts.end(), gopts.begin(), gopts.end());
  Args a("bench fid", "[options]", opts);
  if (!a.parse(argc, argv)) return 0;
  std::vector<int> budgets = nfe_budgets(a.str("nfe"), "tweedie bench fid");
  std::vector<const SamplerInfo*> chosen;
  for (auto& name : split(a.str("samplers"))) chosen.push_back(&find_sampler(name));
  check(!budgets.empty() && !chosen.empty(), "tweedie bench fid: no samplers or NFE budgets given");
  const std::string outdir = a.str("out");
  check(is_directory(outdir), "tweedie bench fid: output directory '", outdir, "' does not exist");
  const std::string spec = a.has("model") ? a.str("model") : default_model_path();
  LoadedModel model = load_model(spec, "", "");
  const double cfg = model.num_classes > 0 ? a.number("cfg") : 1.0;
  const GuidanceOptions guidance = guidance_options(a, model, cfg, model.num_classes > 0, "a class-conditional model",
                                                    uint64_t(a.integer("seed")));
  auto ev = make_evaluator(a.str("classifier"), a.str("reference"));
  check_model_fits(model, *ev, spec);
  const int64_t n = a.integer("num");
  GenerateOptions gopt;
  gopt.batch = a.integer("batch");

  struct Cell {
    int nfe;
    double fid, acc, seconds;
  };
  std::vector<std::vector<Cell>> cells;
  for (const SamplerInfo* s : chosen) {
    cells.emplace_back();
    for (int budget : budgets) {
      const int steps = steps_for_nfe(*s, budget);
      auto sigmas = make_schedule(a.str("schedule"), model.denoiser->process(), steps);
      Progress prog("bench fid " + s->name + " @" + std::to_string(budget), int(chunks_of(n, gopt.batch) * steps),
                    !a.has("quiet"));
      gopt.progress = [&](int64_t done, int64_t) { prog.update(int(done)); };
      const double t0 = now();
      auto smp = generate_balanced(model, *s, sigmas, n, guidance, uint64_t(a.integer("seed")), gopt);
      const double secs = now() - t0;
      prog.finish();
      EvalResult r = ev->evaluate(smp.images, smp.labels);
      cells.back().push_back({smp.nfe, r.fid, r.accuracy, secs});
    }
  }
  std::ostringstream md;
  char buf[400];
  std::snprintf(buf, sizeof buf, "%ld class-balanced samples, %s, schedule %s, seed %ld; reference %s (%ld images)",
                (long)n, guidance.describe().c_str(), a.str("schedule").c_str(), (long)a.integer("seed"), a.str("reference").c_str(),
                (long)ev->reference().n);
  md << "# FID and class accuracy vs NFE\n\n`tweedie bench fid";
  for (int i = 0; i < argc; ++i) md << " " << argv[i];
  md << "`: " << spec << ", " << buf << ". The classifier's own accuracy on the reference set: ";
  std::snprintf(buf, sizeof buf, "%.2f%%.", 100 * ev->reference_accuracy());
  md << buf << " Actual NFE in parentheses where below the budget.\n";
  auto table = [&](const char* title, auto value) {
    md << "\n**" << title << "**\n\n| sampler |";
    for (int b : budgets) md << " NFE " << b << " |";
    md << "\n|---|";
    for (size_t i = 0; i < budgets.size(); ++i) md << "---|";
    md << "\n";
    for (size_t k = 0; k < chosen.size(); ++k) {
      md << "| " << chosen[k]->name << " |";
      for (size_t i = 0; i < budgets.size(); ++i) {
        const Cell& c = cells[k][i];
        md << " " << value(c) << (c.nfe < budgets[i] ? " (" + std::to_string(c.nfe) + ")" : "") << " |";
      }
      md << "\n";
    }
  };
  auto fmt = [](const char* f, double v) {
    char b[32];
    std::snprintf(b, sizeof b, f, v);
    return std::string(b);
  };
  table("FID (lower is better)", [&](const Cell& c) { return fmt("%.2f", c.fid); });
  if (model.num_classes > 0) table("class accuracy", [&](const Cell& c) { return fmt("%.1f%%", 100 * c.acc); });
  table("seconds to generate", [&](const Cell& c) { return fmt("%.0f", c.seconds); });
  std::vector<Series> series;
  for (size_t k = 0; k < chosen.size(); ++k) {
    Series s{chosen[k]->name, {}, {}, false};
    for (auto& c : cells[k]) s.x.push_back(c.nfe), s.y.push_back(c.fid);
    series.push_back(s);
  }
  PlotOptions po;
  po.title = "FID vs NFE: " + spec.substr(spec.find_last_of('/') + 1) + " (cfg " + fmt("%g", cfg) + ", " + a.str("schedule") + ")";
  po.xlabel = "NFE";
  po.ylabel = "FID (classifier features)";
  po.logx = po.logy = true;
  po.width = 1000;
  po.height = 700;
  write_png(outdir + "/fid.png", plot(series, po));
  write_file_atomic(outdir + "/fid.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"fid", "FID and class accuracy vs NFE for several samplers on a model", bench_fid});

}  // namespace
}  // namespace tweedie::cli
