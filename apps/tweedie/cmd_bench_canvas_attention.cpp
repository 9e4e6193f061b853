// tweedie bench canvas-attention: Attend-and-Excite and layout guidance
// (guide/attend_and_excite.h, guide/layout_guidance.h) on a FashionCanvas
// text model's 3- and 4-item prompts, where items get lost or land in the
// wrong cell: image accuracy by SPEC's judge without either, with each, and
// with both, on the same seeded prompts and noise. A&E's subjects are the
// item words; layout guidance's boxes are the items' cells. Writes
// canvas_attention.md and canvas_attention.png (one row per setting).
#include <cstdio>
#include <sstream>

#include "bench_common.h"
#include "cli.h"
#include "eval_common.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/guide/attend_and_excite.h"
#include "tweedie/guide/layout_guidance.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"

namespace tweedie::cli {
namespace {

int run(int argc, char** argv) {
  Args a("bench canvas-attention", "[-m MODEL] [options]",
         {{"model", "m", false, "FashionCanvas text model (default: models/fashion_canvas.safetensors)", ""},
          {"num", "n", false, "prompts (3 and 4 items in turn, from tweedie eval's seeded set)", "32"},
          {"cfg", "", false, "CFG scale", "5"},
          {"sampler", "", false, "sampler", "dpmpp-2m"},
          {"steps", "", false, "steps", "20"},
          {"schedule", "", false, "step schedule", "karras"},
          {"ae-scale", "", false, "Attend-and-Excite step size scale", "20"},
          {"layout-scale", "", false, "layout guidance step size eta", "30"},
          {"seed", "", false, "prompt set and noise seed", "0"},
          {"tokenizer", "", false, "folder with vocab.json + merges.txt (or $TWEEDIE_TOKENIZER)", ""},
          {"out", "o", false, "output folder (must exist) for canvas_attention.md and .png", "bench/results"},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie bench canvas-attention: unexpected argument '",
        a.positional().empty() ? "" : a.positional()[0], "'");
  const std::string spec = a.has("model") ? a.str("model") : default_text_model_path();
  const int64_t n = a.integer("num");
  check(n >= 2, "tweedie bench canvas-attention: -n must be >= 2");
  check(a.integer("seed") >= 0, "tweedie bench canvas-attention: --seed must be >= 0");
  const uint64_t seed = uint64_t(a.integer("seed"));
  const int steps = positive_ints(a.str("steps"), "tweedie bench canvas-attention", "--steps").at(0);
  const double cfg = a.number("cfg"), ae_scale = a.number("ae-scale"), layout_scale = a.number("layout-scale");
  check(std::isfinite(cfg), "tweedie bench canvas-attention: --cfg must be finite");
  const std::string sampler = find_sampler(a.str("sampler")).name, dir = a.str("out");
  check(is_directory(dir), "tweedie bench canvas-attention: output directory '", dir, "' does not exist");

  TextModelOptions to;
  to.tokenizer = a.str("tokenizer");
  LoadedModel model = load_model(spec, "", "", to);
  check(model.text(), spec, " is not a text model");
  StableDiffusion& sd = *model.sd;
  CanvasJudge judge = make_canvas_judge("");
  std::vector<CanvasLayout> layouts;  // the 3- and 4-item prompts of the eval set, in order
  for (const CanvasLayout& l : canvas_prompt_set(2 * n + 4, seed))
    if (l.items.size() >= 3 && int64_t(layouts.size()) < n) layouts.push_back(l);

  struct Setting {
    const char* name;
    bool ae, layout;
  };
  const std::vector<Setting> settings = {
      {"none", false, false}, {"Attend-and-Excite", true, false}, {"layout", false, true}, {"both", true, true}};
  Progress prog("bench canvas-attention", int(settings.size() * size_t(n)), !a.has("quiet"));
  std::ostringstream md;
  md << "`tweedie bench canvas-attention";
  for (int i = 0; i < argc; ++i) md << ' ' << argv[i];
  md << "`: " << spec << ", " << n << " seeded prompts with 3 and 4 items (tweedie eval's set), " << sampler << ", "
     << a.str("schedule") << ", " << steps << " steps, CFG " << fmt("%g", cfg)
     << "; Attend-and-Excite on the item words (scale " << fmt("%g", ae_scale)
     << "), layout guidance with the items' cells as boxes (eta " << fmt("%g", layout_scale)
     << "). Judged by SPEC's rules with the shipped classifier.\n\n"
     << "| guidance | image accuracy | 3 items | 4 items | presence | class | colour | empty cells | time |\n"
     << "|---|---|---|---|---|---|---|---|---|\n";
  std::vector<torch::Tensor> rows;
  int done = 0;
  CanvasScore reference;
  for (const Setting& st : settings) {
    std::vector<torch::Tensor> images;
    const double t0 = now();
    for (int64_t i = 0; i < n; ++i) {
      const CanvasLayout& l = layouts[size_t(i)];
      SdRequest req;
      req.prompt = canonical_caption(l);
      req.sampler = sampler;
      req.schedule = a.str("schedule");
      req.steps = steps;
      req.cfg = cfg;
      req.width = req.height = 64;
      req.seed = seed + uint64_t(i);
      const auto targets = canvas_attention_targets(sd, layouts, i, 1);
      std::vector<std::vector<int64_t>> tokens;
      std::vector<WordBox> boxes;
      const int64_t last = last_text_token(sd.word_positions(req.prompt));
      for (const AttentionTarget& t : targets) {
        tokens.push_back(t.tokens);
        boxes.push_back({"", t.box[1], t.box[0], t.box[3], t.box[2]});  // {top, left, bottom, right} -> x0, y0, x1, y1
      }
      if (st.ae) req.update = attend_and_excite(sd.denoiser(), tokens, last, {ae_scale, 0.5, 20}, steps);
      if (st.layout)
        req.update = chain(req.update, layout_guidance(sd.denoiser(), tokens, boxes, {layout_scale, 0.2, 5, 0.2}, steps));
      images.push_back(sd_generate(sd, req));
      prog.update(++done);
    }
    const double secs = now() - t0;
    const torch::Tensor all = torch::cat(images);
    const CanvasEval e = evaluate_canvases(judge, layouts, all, seed);
    reference = e.reference;
    const CanvasScore& g = e.generated;
    md << "| " << st.name << " | " << fmt("%.3f", g.all.accuracy()) << " | " << fmt("%.3f", g.by_count[2].accuracy())
       << " | " << fmt("%.3f", g.by_count[3].accuracy()) << " | " << fmt("%.3f", g.presence_accuracy()) << " | "
       << fmt("%.3f", g.class_accuracy()) << " | " << fmt("%.3f", g.colour_accuracy()) << " | "
       << fmt("%.3f", g.empty_accuracy()) << " | " << fmt_time(secs) << " |\n";
    rows.push_back(all.narrow(0, 0, std::min<int64_t>(n, 8)));
  }
  prog.finish();
  md << "| reference (test canvases) | " << fmt("%.3f", reference.all.accuracy()) << " | "
     << fmt("%.3f", reference.by_count[2].accuracy()) << " | " << fmt("%.3f", reference.by_count[3].accuracy())
     << " | " << fmt("%.3f", reference.presence_accuracy()) << " | " << fmt("%.3f", reference.class_accuracy())
     << " | " << fmt("%.3f", reference.colour_accuracy()) << " | " << fmt("%.3f", reference.empty_accuracy())
     << " | |\n\n`canvas_attention.png`: the first " << std::min<int64_t>(n, 8)
     << " prompts, one row per setting in the table's order.\n\n"
     << machine_bullets(first_line_with("/proc/loadavg", ""));
  write_png(dir + "/canvas_attention.png", make_grid(torch::cat(rows), int(std::min<int64_t>(n, 8))));
  write_file_atomic(dir + "/canvas_attention.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"canvas-attention",
                    "Attend-and-Excite and layout guidance on FashionCanvas 3- and 4-item prompts (a text model)", run});

}  // namespace
}  // namespace tweedie::cli
