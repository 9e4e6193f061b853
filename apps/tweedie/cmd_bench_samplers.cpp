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

#include "bench_common.h"
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

BenchRegistrar reg({"samplers", "error vs NFE of every sampler on the exact Gaussian mixtures", bench_samplers});

}  // namespace
}  // namespace tweedie::cli
