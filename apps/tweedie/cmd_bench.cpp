// tweedie bench samplers: accuracy of every sampler versus NFE on the shipped
// Gaussian mixtures, against exact answers.
//   deterministic samplers: mean L2 distance of the endpoint (sigma = 0) from
//     the exact probability-flow ODE solution started at the same noise
//     (RK4 in log sigma, 2000 steps, to sigma = 1e-4, then the exact denoiser);
//   every sampler: sliced Wasserstein-1 distance (64 directions) of the
//     samples from exact samples of the mixture.
// Writes a markdown table and one error-vs-NFE PNG per mixture.
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>

#include <cmath>
#include <cstdio>
#include <sstream>

#include "cli.h"
#include "eval_common.h"
#include "guidance_args.h"
#include "sampling_args.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/plot.h"
#include "tweedie/models/gmm.h"

namespace tweedie::cli {
namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) v.push_back(t);
  return v;
}

// --nfe "10,20,50" -> {10, 20, 50}; Error naming the command and entry.
std::vector<int> nfe_budgets(const std::string& list, const char* cmd) {
  std::vector<int> budgets;
  for (auto& b : split(list)) {
    try {
      budgets.push_back(std::stoi(b));
    } catch (...) {
      fail(cmd, ": --nfe entry '", b, "' is not an integer");
    }
    check(budgets.back() >= 1, cmd, ": NFE budgets must be >= 1");
  }
  return budgets;
}

torch::Tensor exact_flow(Denoiser& d, torch::Tensor x, double s0, int n = 2000) {
  const double u0 = std::log(s0), u1 = std::log(1e-4), h = (u1 - u0) / n;
  auto f = [&](const torch::Tensor& y, double u) { return y - d.predict(y, std::exp(u), {}).x0(); };
  for (int i = 0; i < n; ++i) {
    double u = u0 + i * h;
    auto k1 = f(x, u), k2 = f(x + k1 * (h / 2), u + h / 2), k3 = f(x + k2 * (h / 2), u + h / 2), k4 = f(x + k3 * h, u + h);
    x = x + (k1 + 2 * k2 + 2 * k3 + k4) * (h / 6);
  }
  return d.predict(x, 1e-4, {}).x0();
}

double sliced_w1(const torch::Tensor& a, const torch::Tensor& b, torch::Generator gen) {
  auto dirs = at::randn({a.size(1), 64}, gen, torch::kFloat64);
  dirs = dirs / dirs.norm(2, 0, true);
  auto pa = std::get<0>(a.to(torch::kFloat64).mm(dirs).sort(0)), pb = std::get<0>(b.to(torch::kFloat64).mm(dirs).sort(0));
  return (pa - pb).abs().mean().item<double>();
}

struct Row {
  std::string sampler;
  std::vector<int> nfe;
  std::vector<double> endpoint, sw;
};

int bench_samplers(int argc, char** argv) {
  Args a("bench samplers", "[options]",
         {{"schedule", "", false, "step schedule", "karras"},
          {"process", "", false, "process", "vp"},
          {"num", "n", false, "samples per run", "1024"},
          {"nfe", "", false, "comma-separated NFE budgets", "5,10,20,50"},
          {"models", "", false, "comma-separated mixture files", "models/gmm/ring2d.json,models/gmm/mix64.json"},
          {"out", "o", false, "output directory for the table and plots", "bench/results"},
          {"samplers", "", false, "comma-separated samplers (default: all)", ""},
          {"seed", "", false, "random seed", "0"}});
  if (!a.parse(argc, argv)) return 0;
  std::vector<int> budgets = nfe_budgets(a.str("nfe"), "tweedie bench samplers");
  const int n = a.integer("num");
  check(n >= 16, "tweedie bench samplers: -n must be >= 16");
  const std::string outdir = a.str("out");
  check(is_directory(outdir), "tweedie bench samplers: output directory '", outdir, "' does not exist");
  auto proc = make_process(a.str("process"));
  std::vector<const SamplerInfo*> chosen;
  if (a.has("samplers"))
    for (auto& name : split(a.str("samplers"))) chosen.push_back(&find_sampler(name));
  else
    for (auto& info : samplers()) chosen.push_back(&info);
  std::ostringstream md;
  md << "Process `" << proc->name() << "`, schedule `" << a.str("schedule") << "`, " << n
     << " samples; `tweedie bench samplers` (seed " << a.str("seed") << ").\n";
  for (auto& path : split(a.str("models"))) {
    auto gmm = GaussianMixture::load(path);
    GMMDenoiser den(gmm, proc);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(a.integer("seed")));
    std::vector<int64_t> shape{n, gmm.dim()};
    auto noise = at::randn(shape, gen, torch::kFloat64);
    auto probe = make_schedule(a.str("schedule"), *proc, 10, ScheduleOptions{});
    const double s0 = probe.front();
    auto exact = exact_flow(den, noise * s0, s0);
    auto truth = gmm.sample(n, gen).reshape({n, -1});
    const double floor_sw = sliced_w1(gmm.sample(n, gen).reshape({n, -1}), truth, gen);
    std::vector<Row> rows;
    Progress prog("bench " + path, chosen.size());
    int done = 0;
    for (const SamplerInfo* ip : chosen) {
      const SamplerInfo& info = *ip;
      Row r{info.name, {}, {}, {}};
      for (int budget : budgets) {
        auto sig = make_schedule(a.str("schedule"), *proc, steps_for_nfe(info, budget), ScheduleOptions{});
        auto g = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(a.integer("seed")) + 1);
        SamplerRun run(den, sig, {}, {}, g);
        torch::Tensor x = run_sampler(info, run, noise * s0);
        const int nfe = run.nfe;
        r.nfe.push_back(nfe);
        r.endpoint.push_back(info.stochastic ? NAN : (x - exact).norm(2, 1).mean().item<double>());
        r.sw.push_back(sliced_w1(x, truth, gen));
      }
      rows.push_back(r);
      prog.update(++done);
    }
    prog.finish();
    auto table = [&](const char* title, bool endpoint) {
      md << "\n**" << path << "** — " << title << "\n\n| sampler |";
      for (int b : budgets) md << " NFE " << b << " |";
      md << "\n|---|";
      for (size_t i = 0; i < budgets.size(); ++i) md << "---|";
      md << "\n";
      for (auto& r : rows) {
        if (endpoint && std::isnan(r.endpoint[0])) continue;
        md << "| " << r.sampler << " |";
        for (size_t i = 0; i < budgets.size(); ++i) {
          char buf[64];
          std::snprintf(buf, sizeof buf, " %.2e%s |", endpoint ? r.endpoint[i] : r.sw[i],
                        r.nfe[i] < budgets[i] ? (" (" + std::to_string(r.nfe[i]) + ")").c_str() : "");
          md << buf;
        }
        md << "\n";
      }
    };
    table("endpoint error vs the exact PF-ODE solution (mean L2; actual NFE in parentheses where below the budget)", true);
    char fl[64];
    std::snprintf(fl, sizeof fl, "%.2e", floor_sw);
    table((std::string("sliced Wasserstein-1 to exact samples (two exact sample sets differ by ") + fl + ")").c_str(),
          false);
    std::vector<Series> series;
    for (auto& r : rows) {
      if (std::isnan(r.endpoint[0])) continue;
      Series s{r.sampler, {}, {}, false};
      for (size_t i = 0; i < budgets.size(); ++i) s.x.push_back(r.nfe[i]), s.y.push_back(r.endpoint[i]);
      series.push_back(s);
    }
    PlotOptions po;
    po.title = "endpoint error vs NFE: " + path + " (" + proc->name() + ", " + a.str("schedule") + ")";
    po.xlabel = "NFE";
    po.ylabel = "mean L2 error to the exact ODE endpoint";
    po.logx = po.logy = true;
    po.width = 1000;
    po.height = 700;
    std::string stem = path.substr(path.find_last_of('/') + 1);
    stem = stem.substr(0, stem.find('.'));
    write_png(outdir + "/samplers_" + stem + ".png", plot(series, po));
  }
  write_file_atomic(outdir + "/samplers.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

// tweedie bench fid: FID and class accuracy of a model's samples versus NFE
// for several samplers (the same seeded noise for every run), judged by the
// shipped classifier (eval_common.h). Writes fid.md and fid.png.
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
      const auto t0 = std::chrono::steady_clock::now();
      auto smp = generate_balanced(model, *s, sigmas, n, guidance, uint64_t(a.integer("seed")), gopt);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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

int run(int argc, char** argv) {
  static const std::vector<std::pair<std::string, int (*)(int, char**)>> subs = {{"samplers", bench_samplers},
                                                                                 {"fid", bench_fid}};
  std::string known;
  for (auto& [name, fn] : subs) {
    if (argc >= 1 && name == argv[0]) return fn(argc - 1, argv + 1);
    known += (known.empty() ? "" : ", ") + name;
  }
  fail("tweedie bench: expected one of: ", known, argc >= 1 ? std::string(" (got '") + argv[0] + "')" : "");
}

CommandRegistrar reg({"bench", "benchmarks: 'bench samplers' (error vs NFE on exact mixtures), 'bench fid' (FID vs NFE)", run});

}  // namespace
}  // namespace tweedie::cli
