// tweedie bench network: the cost of a network architecture on this machine,
// for choosing sizes by measurement before training: parameters, the time of
// an inference forward pass (no gradients, eval mode) and of a training
// forward + backward, on random inputs of the network's sample shape, for
// the `arch` and `network` of a training config. Arch "sd" (UNet + text
// encoder): inference runs the UNet on a given context (prompts are encoded
// once per grid), training runs the text encoder too, on random token ids.
// Prints a markdown table.
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "cli.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/models/sd_network.h"
#include "tweedie/train/trainer.h"

namespace tweedie::cli {
namespace {

int bench_network(int argc, char** argv) {
  Args a("bench network", "-c CONFIG.json [options]",
         {{"config", "c", false, "training config whose arch and network are measured", ""},
          {"batch", "", false, "inference batch (e.g. a 16-image grid with CFG: 32)", "32"},
          {"train-batch", "", false, "training batch (default: the config's batch_size)", ""},
          {"reps", "", false, "repetitions per measurement (the table shows the median)", "3"},
          {"min-time", "", false, "seconds per repetition (at least one call)", "2"},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie bench network: unexpected argument '",
        a.positional().empty() ? "" : a.positional()[0], "'");
  check(a.has("config"), "tweedie bench network: --config is required");
  const std::string path = a.str("config");
  const TrainConfig cfg = TrainConfig::parse(read_file(path), path);
  const int batch = a.integer("batch"), reps = a.integer("reps");
  const int train_batch = a.has("train-batch") ? a.integer("train-batch") : int(cfg.batch_size);
  const double min_time = a.number("min-time");
  check(batch >= 1 && train_batch >= 1, "tweedie bench network: --batch and --train-batch must be >= 1");
  check(reps >= 1, "tweedie bench network: --reps must be >= 1");
  check(min_time >= 0, "tweedie bench network: --min-time must be >= 0");
  const std::string load = first_line_with("/proc/loadavg", "");

  torch::manual_seed(0);
  NetworkPtr net = make_network(cfg.arch, cfg.network_json);
  int64_t params = 0;
  for (auto& p : net->parameters()) params += p.numel();
  auto* sd = dynamic_cast<SdNetwork*>(net.get());
  auto inputs = [&](int64_t n, bool train) {
    std::vector<int64_t> shape{n};
    for (auto d : net->sample_shape()) shape.push_back(d);
    Cond c;
    if (sd && train)
      c.extra["input_ids"] = torch::randint(sd->config().text.vocab_size, {n, 77}, torch::kInt64);
    else if (sd)
      c.context = torch::randn({n, 77, sd->config().unet.context_dim});
    if (net->num_classes() > 0) c.labels = torch::randint(net->num_classes(), {n}, torch::kInt64);
    return std::make_tuple(torch::randn(shape), torch::rand({n}) * 999, c);
  };
  Progress prog("bench network", 2 * reps, !a.has("quiet"));
  int done = 0;
  auto [x, t, c] = inputs(batch, false);
  net->eval();
  Timing fwd = measure(
      [&] {
        torch::NoGradGuard ng;
        net->forward(x, t, c);
      },
      reps, min_time, prog, done);
  auto [xt, tt, ct] = inputs(train_batch, true);
  net->train();
  Timing trn = measure(
      [&] {
        net->zero_grad();
        net->forward(xt, tt, ct).square().mean().backward();
      },
      reps, min_time, prog, done);
  prog.finish();

  std::ostringstream md;
  md << "`tweedie bench network";
  for (int i = 0; i < argc; ++i) md << ' ' << argv[i];
  md << "`: arch " << cfg.arch << ", " << fmt("%.2f", double(params) / 1e6) << "M parameters, sample shape [";
  for (size_t i = 0; i < net->sample_shape().size(); ++i) md << (i ? ", " : "") << net->sample_shape()[i];
  md << "], fp32. Median of " << reps << " repetitions of at least " << min_time << " s (after one warm-up).\n\n"
     << "| what | time (median) | min | max |\n|---|---|---|---|\n"
     << "| inference forward, batch " << batch << " | " << fmt_time(fwd.median) << " | " << fmt_time(fwd.min) << " | "
     << fmt_time(fwd.max) << " |\n"
     << "| training forward + backward, batch " << train_batch << " | " << fmt_time(trn.median) << " | "
     << fmt_time(trn.min) << " | " << fmt_time(trn.max) << " |\n\n"
     << machine_bullets(load);
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"network", "time a training config's network: inference forward and training forward + backward",
                    bench_network});

}  // namespace
}  // namespace tweedie::cli
