// tweedie bench canvas: how well a FashionCanvas text model follows prompts
// (SPEC's judge, eval/canvas_judge.h) as the sampling settings change:
//
//   CFG table      image accuracy (all, seen, held-out pair) and FID at each
//                  --cfg scale, with --sampler at --steps;
//   sampler table  image accuracy of each --samplers at each --steps-list,
//                  at --cfg-at;
// each on the same -n seeded prompts (canvas_prompt_set) and the same noise,
// with the reference (the judge on test canvases of the same prompts).
// Writes canvas.md (the tables) and canvas.png (accuracy against CFG scale,
// and against steps per sampler) into --out.
#include <cstdio>
#include <sstream>

#include "bench_common.h"
#include "cli.h"
#include "eval_common.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/plot.h"

namespace tweedie::cli {
namespace {

std::vector<double> numbers(const std::string& list, const char* option) {
  std::vector<double> out;
  for (auto& s : split(list)) {
    try {
      size_t used = 0;
      out.push_back(std::stod(s, &used));
      check(used == s.size(), "");
    } catch (...) {
      fail("tweedie bench canvas: ", option, " entry '", s, "' is not a number");
    }
  }
  check(!out.empty(), "tweedie bench canvas: ", option, " is empty");
  return out;
}

int run(int argc, char** argv) {
  Args a("bench canvas", "[-m MODEL] [options]",
         {{"model", "m", false, "FashionCanvas text model (default: models/fashion_canvas.safetensors)", ""},
          {"num", "n", false, "prompts per setting (the seeded prompt set of tweedie eval)", "64"},
          {"cfg", "", false, "CFG scales of the CFG table", "1,2,3,5,7"},
          {"sampler", "", false, "sampler of the CFG table", "dpmpp-2m"},
          {"steps", "", false, "steps of the CFG table", "20"},
          {"samplers", "", false, "samplers of the sampler table", "euler,ddim,dpmpp-2m,unipc-bh2"},
          {"steps-list", "", false, "steps of the sampler table", "5,10,20"},
          {"cfg-at", "", false, "CFG scale of the sampler table", "5"},
          {"schedule", "", false, "step schedule", "karras"},
          {"seed", "", false, "prompt set and noise seed", "0"},
          {"batch", "", false, "prompts per sampler run", "32"},
          {"tokenizer", "", false, "folder with vocab.json + merges.txt (or $TWEEDIE_TOKENIZER)", ""},
          {"out", "o", false, "output folder (must exist) for canvas.md and canvas.png", "bench/results"},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie bench canvas: unexpected argument '",
        a.positional().empty() ? "" : a.positional()[0], "'");
  const std::string spec = a.has("model") ? a.str("model") : default_text_model_path();
  const int64_t n = a.integer("num"), batch = a.integer("batch");
  check(n >= 2 && batch >= 1, "tweedie bench canvas: -n must be >= 2 and --batch >= 1");
  check(a.integer("seed") >= 0, "tweedie bench canvas: --seed must be >= 0");
  const uint64_t seed = uint64_t(a.integer("seed"));
  const auto cfgs = numbers(a.str("cfg"), "--cfg");
  const auto cfg_at = numbers(a.str("cfg-at"), "--cfg-at");
  check(cfg_at.size() == 1, "tweedie bench canvas: --cfg-at takes one scale");
  const auto steps_list = positive_ints(a.str("steps-list"), "tweedie bench canvas", "--steps-list");
  const int steps = positive_ints(a.str("steps"), "tweedie bench canvas", "--steps").at(0);
  std::vector<std::string> samplers;
  for (auto& s : split(a.str("samplers"))) samplers.push_back(find_sampler(s).name);
  const std::string sampler = find_sampler(a.str("sampler")).name;
  const std::string dir = a.str("out");
  check(is_directory(dir), "tweedie bench canvas: output directory '", dir, "' does not exist");

  TextModelOptions to;
  to.tokenizer = a.str("tokenizer");
  LoadedModel model = load_model(spec, "", "", to);
  check(model.text(), spec, " is not a text model");
  StableDiffusion& sd = *model.sd;
  CanvasJudge judge = make_canvas_judge("");
  const auto layouts = canvas_prompt_set(n, seed);
  std::vector<std::string> prompts;
  for (auto& l : layouts) prompts.push_back(canonical_caption(l));

  const int64_t total = int64_t(cfgs.size() + samplers.size() * steps_list.size());
  Progress prog("bench canvas", int(total * n), !a.has("quiet"));
  int64_t done = 0;
  auto measure_one = [&](const std::string& smp, int st, double cfg) {
    SdRequest req;
    req.sampler = smp;
    req.schedule = a.str("schedule");
    req.steps = st;
    req.cfg = cfg;
    req.width = req.height = 64;
    req.seed = seed;
    const double t0 = now();
    auto images = generate_prompts(sd, prompts, req, batch, [&](int64_t k) { prog.update(int(done + k)); });
    const double secs = now() - t0;
    done += n;
    return std::make_pair(evaluate_canvases(judge, layouts, images, seed), secs);
  };

  std::ostringstream md;
  md << "`tweedie bench canvas";
  for (int i = 0; i < argc; ++i) md << ' ' << argv[i];
  md << "`: " << spec << ", " << n << " seeded prompts (1 to 4 items in turn; every second group of four names one "
     << "held-out pair), judged by SPEC's rules with the shipped classifier.\n\n";
  std::vector<Series> curves;
  Series by_cfg{"generated", {}, {}};
  md << "### Image accuracy against CFG scale (" << sampler << ", " << a.str("schedule") << ", " << steps
     << " steps)\n\n| CFG | accuracy | seen | held-out pair | 1 item | 2 | 3 | 4 | colour | class | FID | time |\n"
     << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  CanvasScore reference;
  for (double cfg : cfgs) {
    auto [e, secs] = measure_one(sampler, steps, cfg);
    reference = e.reference;
    const CanvasScore& g = e.generated;
    md << "| " << fmt("%g", cfg) << " | " << fmt("%.3f", g.all.accuracy()) << " | " << fmt("%.3f", g.seen.accuracy())
       << " | " << fmt("%.3f", g.held_out.accuracy());
    for (auto& t : g.by_count) md << " | " << fmt("%.3f", t.accuracy());
    md << " | " << fmt("%.3f", g.colour_accuracy()) << " | " << fmt("%.3f", g.class_accuracy()) << " | "
       << fmt("%.2f", e.fid) << " | " << fmt_time(secs) << " |\n";
    by_cfg.x.push_back(cfg);
    by_cfg.y.push_back(g.all.accuracy());
  }
  md << "| reference | " << fmt("%.3f", reference.all.accuracy()) << " | " << fmt("%.3f", reference.seen.accuracy())
     << " | " << fmt("%.3f", reference.held_out.accuracy());
  for (auto& t : reference.by_count) md << " | " << fmt("%.3f", t.accuracy());
  md << " | " << fmt("%.3f", reference.colour_accuracy()) << " | " << fmt("%.3f", reference.class_accuracy())
     << " | 0 | |\n\n";

  md << "### Image accuracy against sampler and steps (CFG " << fmt("%g", cfg_at[0]) << ", " << a.str("schedule")
     << ")\n\n| sampler |";
  for (int st : steps_list) md << " " << st << " steps |";
  md << "\n|---|";
  for (size_t i = 0; i < steps_list.size(); ++i) md << "---|";
  md << "\n";
  for (auto& smp : samplers) {
    Series s{smp, {}, {}};
    md << "| " << smp << " |";
    for (int st : steps_list) {
      auto [e, secs] = measure_one(smp, st, cfg_at[0]);
      md << " " << fmt("%.3f", e.generated.all.accuracy()) << " |";
      s.x.push_back(st);
      s.y.push_back(e.generated.all.accuracy());
    }
    md << "\n";
    curves.push_back(s);
  }
  prog.finish();
  md << "\n" << machine_bullets(first_line_with("/proc/loadavg", ""));

  PlotOptions po;
  po.title = "prompt accuracy against CFG (" + sampler + ", " + std::to_string(steps) + " steps)";
  po.xlabel = "CFG scale";
  po.ylabel = "image accuracy";
  po.width = 600;
  po.height = 400;
  Image left = plot({by_cfg, Series{"reference", {cfgs.front(), cfgs.back()},
                                   {reference.all.accuracy(), reference.all.accuracy()}}}, po);
  po.title = "against steps (CFG " + fmt("%g", cfg_at[0]) + ")";
  po.xlabel = "steps";
  curves.push_back(Series{"reference", {double(steps_list.front()), double(steps_list.back())},
                          {reference.all.accuracy(), reference.all.accuracy()}});
  Image right = plot(curves, po);
  Image both(left.width + right.width, left.height, left.channels, 255);
  for (int y = 0; y < left.height; ++y)
    for (int x = 0; x < both.width; ++x) {
      const Image& src = x < left.width ? left : right;
      const int sx = x < left.width ? x : x - left.width;
      for (int c = 0; c < both.channels; ++c)
        both.pixels[(size_t(y) * both.width + x) * both.channels + c] =
            src.pixels[(size_t(y) * src.width + sx) * src.channels + c];
    }
  write_png(dir + "/canvas.png", both);
  write_file_atomic(dir + "/canvas.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"canvas", "FashionCanvas prompt accuracy against CFG scale, sampler and steps (a text model)", run});

}  // namespace
}  // namespace tweedie::cli
