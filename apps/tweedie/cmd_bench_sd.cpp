// tweedie bench sd: one Stable Diffusion 1.5 UNet forward and one VAE decode
// on this machine, with random weights in the released architecture (the
// "sd1" UNet preset, 859,520,964 parameters; the "sd" AutoencoderKL).
//
//   UNet forward   at each --sizes (image pixels; latent = size / 8), batch
//       1 and 2 (2 = the CFG pair), 77-token context, as the sampler calls it.
//   VAE decode     a 64x64 latent to a 512x512 image (untiled).
// fp32 first, then the same modules cast once to bf16 (as --bf16 does), with
// the bf16 output's relative L2 error against fp32 on the same weights and
// inputs. Every zero-initialized output projection gets random weights so the
// outputs (and the error) are not trivially zero. Each measurement: one
// warm-up, then --reps timed calls; the table shows the median, and the peak
// resident memory of the measurement (VmHWM after resetting it through
// /proc/self/clear_refs). Writes sd.md; bench/sd_torch.py times PyTorch eager
// on the same architecture.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "bench_common.h"
#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/autoencoder_kl.h"
#include "tweedie/models/sd_unet.h"
#include "tweedie/nn/module_weights.h"

namespace tweedie::cli {
namespace {

// Peak resident set since the last reset, in MiB (0 where /proc lacks it).
void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
}
double peak_rss_mib() {
  const std::string v = first_line_with("/proc/self/status", "VmHWM");
  return v == "unknown" ? 0.0 : std::atof(v.c_str()) / 1024.0;
}

// Random weights everywhere a module starts at zero (output projections):
// uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch's default Linear/Conv init.
void randomize_zero_weights(torch::nn::Module& m, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& p : m.parameters())
    if (p.dim() >= 2 && p.abs().max().item<double>() == 0.0) {
      const double b = 1.0 / std::sqrt(double(p.numel() / p.size(0)));
      p.uniform_(-b, b);
    }
}

double rel_error(const torch::Tensor& a, const torch::Tensor& ref) {
  auto r = ref.to(torch::kFloat64), d = a.to(torch::kFloat64) - r;
  return (d.norm() / r.norm().clamp_min(1e-300)).item<double>();
}

int bench_sd(int argc, char** argv) {
  Args a("bench sd", "[options]",
         {{"sizes", "", false, "comma-separated image sizes for the UNet rows (multiples of 64)", "512,256"},
          {"batches", "", false, "comma-separated UNet batch sizes (2 = one CFG pair)", "1,2"},
          {"dtypes", "", false, "comma-separated: fp32, bf16", "fp32,bf16"},
          {"only", "", false, "unet or vae: measure one network only", ""},
          {"reps", "", false, "timed calls per measurement after one warm-up (the table shows the median)", "5"},
          {"seed", "", false, "seed of the random weights and inputs", "0"},
          {"out", "o", false, "output directory for sd.md", "bench/results"},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  const char* cmd = "tweedie bench sd";
  check(a.positional().empty(), cmd, ": unexpected argument '", a.positional().empty() ? "" : a.positional()[0], "'");
  const int reps = a.integer("reps");
  check(reps >= 1, cmd, ": --reps must be >= 1");
  const int64_t seed = a.integer("seed");
  check(seed >= 0, cmd, ": --seed must be >= 0");
  std::vector<int64_t> sizes, batches;
  for (auto& s : positive_ints(a.str("sizes"), cmd, "--sizes")) {
    check(s % 64 == 0, cmd, ": --sizes entry ", s, " is not a multiple of 64");
    sizes.push_back(s);
  }
  for (auto& b : positive_ints(a.str("batches"), cmd, "--batches")) batches.push_back(b);
  std::vector<bool> bf16s;
  for (auto& d : split(a.str("dtypes"))) {
    check(d == "fp32" || d == "bf16", cmd, ": unknown --dtypes entry '", d, "' (known: fp32, bf16)");
    bf16s.push_back(d == "bf16");
  }
  check(!bf16s.empty() && !sizes.empty() && !batches.empty(), cmd, ": --sizes, --batches and --dtypes need an entry");
  const std::string only = a.str("only");
  check(only.empty() || only == "unet" || only == "vae", cmd, ": --only must be unet or vae, got '", only, "'");
  const std::string outdir = a.str("out");
  check(is_directory(outdir), cmd, ": output directory '", outdir, "' does not exist");
  const std::string load = first_line_with("/proc/loadavg", "");
  const bool unet_rows = only != "vae", vae_rows = only != "unet";

  struct Row {
    std::string what, dtype;
    Timing t;
    double peak_mib = 0, gflop = 0, err = -1;
  };
  std::vector<Row> rows;
  const int total = int(bf16s.size()) * ((unet_rows ? int(sizes.size() * batches.size()) : 0) + (vae_rows ? 1 : 0)) * reps;
  Progress prog("bench sd", total, !a.has("quiet"));
  int done = 0;
  torch::NoGradGuard ng;

  // One row: warm-up, reps timed calls, peak memory; the output kept for the error column.
  auto run = [&](const std::string& what, bool bf16, double gflop, const std::function<torch::Tensor()>& call,
                 torch::Tensor& ref) {
    reset_peak_rss();
    torch::Tensor out;
    Timing t = measure([&] { out = call(); }, reps, 0.0, prog, done);
    Row r{what, bf16 ? "bf16" : "fp32", t, peak_rss_mib(), gflop};
    if (bf16 && ref.defined()) r.err = rel_error(out, ref);
    if (!bf16) ref = out.to(torch::kFloat32);
    rows.push_back(r);
  };

  if (unet_rows) {
    NetworkPtr unet = make_sd_unet(SdUNetConfig::preset("sd1"));
    randomize_zero_weights(*unet, uint64_t(seed));
    std::map<std::pair<int64_t, int64_t>, torch::Tensor> refs;
    for (bool bf16 : bf16s) {
      if (bf16) cast_for_inference(*unet, torch::kBFloat16);
      for (int64_t size : sizes)
        for (int64_t b : batches) {
          torch::manual_seed(seed + 1);
          auto x = torch::randn({b, 4, size / 8, size / 8});
          auto t = torch::full({b}, 500.0);
          Cond c;
          c.context = torch::randn({b, 77, 768});
          // 803 GFLOP per 512x512 sample (the count); the convolutions and
          // linear layers scale with the pixels, attention with their square.
          const double gflop = size == 512 ? 803.0 * b : 0.0;
          run("UNet forward " + std::to_string(size) + "x" + std::to_string(size) + ", batch " + std::to_string(b), bf16,
              gflop, [&] { return unet->forward(x, t, c); }, refs[{size, b}]);
        }
    }
  }
  if (vae_rows) {
    AutoencoderKL vae{AutoencoderKLConfig{}};
    randomize_zero_weights(*vae, uint64_t(seed));
    torch::manual_seed(seed + 2);
    auto z = torch::randn({1, 4, 64, 64});
    torch::Tensor ref;
    for (bool bf16 : bf16s) {
      if (bf16) cast_for_inference(*vae, torch::kBFloat16);
      run("VAE decode 64x64 -> 512x512", bf16, 0.0, [&] { return vae->decode(z); }, ref);
    }
  }
  prog.finish();

  std::ostringstream md;
  md << "# Stable Diffusion 1.5 speed (random weights)\n\n`tweedie bench sd";
  for (int i = 0; i < argc; ++i) md << ' ' << argv[i];
  md << "`\n\nSD1.5 UNet (`sd1` preset, 859,520,964 parameters) with a 77x768 context, and the SD AutoencoderKL "
     << "decoder, random weights. fp32, then the same modules cast once to bf16; the error column is the bf16 "
     << "output's relative L2 error against fp32 on the same weights and inputs. Median of " << reps
     << " calls after one warm-up; peak memory is the process's resident high-water mark during the row.\n\n"
     << "| what | dtype | median | min | max | GFLOP/s | peak RSS | bf16 vs fp32 |\n|---|---|---|---|---|---|---|---|\n";
  for (auto& r : rows)
    md << "| " << r.what << " | " << r.dtype << " | " << fmt_time(r.t.median) << " | " << fmt_time(r.t.min) << " | "
       << fmt_time(r.t.max) << " | " << (r.gflop > 0 ? fmt("%.0f", r.gflop / r.t.median) : "") << " | "
       << fmt("%.0f MiB", r.peak_mib) << " | " << (r.err >= 0 ? fmt("%.4f", r.err) : "") << " |\n";
  md << "\n" << machine_bullets(load);
  write_file_atomic(outdir + "/sd.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"sd", "SD1.5 UNet forward and VAE decode time, fp32 and bf16, random weights (writes sd.md)",
                    bench_sd});

}  // namespace
}  // namespace tweedie::cli
