// tweedie bench edit-text: text edits on the FashionCanvas model, judged by
// SPEC's judge. For n seeded layouts (the prompt set of `tweedie eval`), two
// edits of the first item: its colour (the next palette colour) and its item
// (the next Fashion-MNIST class); the source prompt is the canonical caption,
// the target the same caption with that word changed. Each source is
// generated from a seed (noise seed + layout index) and edited by:
//   regenerate   the target prompt sampled from the same noise (what a user
//                gets without an edit method: Prompt-to-Prompt with nothing
//                injected, so the rows are the two prompts' own samples)
//   p2p          Prompt-to-Prompt with its default windows
//   p2p + blend  ... and local blending on the edited item's words
// Reported per edit and setting: the share of edited images the judge finds
// correct for the target caption; the share where everything the edit
// should keep is kept (every other cell judged as in the source, and the
// edited item's cell keeps its other attribute); the RMSE of the pixels
// outside the edited cell against the source ([-1, 1] scale); seconds per
// edit. Writes edit_text.md and edit_text.png (per setting: sources, edits).
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>

#include "bench_common.h"
#include "cli.h"
#include "eval_common.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/edit/prompt_to_prompt.h"
#include "tweedie/eval/canvas_judge.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/process/schedule.h"

namespace tweedie::cli {
namespace {

struct Setting {
  std::string name;
  double cross, self;
  bool blend;
};

struct Tally {
  int64_t n = 0, correct = 0, kept = 0;
  double sq = 0, count = 0, seconds = 0;
};

int run(int argc, char** argv) {
  Args a("bench edit-text", "[-m MODEL] [options]",
         {{"model", "m", false, "FashionCanvas text model (default: models/fashion_canvas.safetensors)", ""},
          {"num", "n", false, "layouts (each edited twice: colour and item)", "32"},
          {"steps", "s", false, "sampler steps", "20"},
          {"cfg", "", false, "CFG scale", "5"},
          {"schedule", "", false, "step schedule", "karras"},
          {"seed", "", false, "prompt set and noise seed", "0"},
          {"tokenizer", "", false, "folder with vocab.json + merges.txt (or $TWEEDIE_TOKENIZER)", ""},
          {"out", "o", false, "output folder (must exist) for edit_text.md and edit_text.png", "bench/results"},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  check(a.positional().empty(), "tweedie bench edit-text: unexpected argument '",
        a.positional().empty() ? "" : a.positional()[0], "'");
  const std::string spec = a.has("model") ? a.str("model") : default_text_model_path();
  const int64_t n = a.integer("num");
  const int steps = a.integer("steps");
  check(n >= 1 && steps >= 2, "tweedie bench edit-text: -n must be >= 1 and --steps >= 2");
  check(a.integer("seed") >= 0, "tweedie bench edit-text: --seed must be >= 0");
  const uint64_t seed = uint64_t(a.integer("seed"));
  const double cfg = a.number("cfg");
  const std::string dir = a.str("out");
  check(is_directory(dir), "tweedie bench edit-text: output directory '", dir, "' does not exist");

  TextModelOptions to;
  to.tokenizer = a.str("tokenizer");
  LoadedModel model = load_model(spec, "", "", to);
  check(model.text(), spec, " is not a text model");
  StableDiffusion& sd = *model.sd;
  const CanvasJudge judge = make_canvas_judge("");
  const auto layouts = canvas_prompt_set(n, seed);
  const std::vector<double> sigmas = make_schedule(a.str("schedule"), sd.process(), steps);
  const std::vector<Setting> settings = {{"regenerate", 0, 0, false}, {"p2p", 0.8, 0.4, false}, {"p2p + blend", 0.8, 0.4, true}};
  const char* edits[] = {"colour", "item"};
  std::map<std::pair<int, size_t>, Tally> tallies;
  std::vector<torch::Tensor> rows(settings.size() * 2 + 2);  // examples: colour sources, edits...; item sources, edits...
  const int64_t shown = std::min<int64_t>(n, 8);
  Progress prog("bench edit-text", int(n * 2 * int64_t(settings.size())), !a.has("quiet"));
  int done = 0;
  torch::NoGradGuard ng;
  for (int64_t i = 0; i < n; ++i) {
    const CanvasLayout& src_layout = layouts[size_t(i)];
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + uint64_t(i));
    const torch::Tensor z = at::randn({1, sd.latent_channels(), 16, 16}, gen, torch::kFloat32);
    for (int e = 0; e < 2; ++e) {
      CanvasLayout tgt_layout = src_layout;
      CanvasItem& it = tgt_layout.items[0];
      if (e == 0)
        it.colour = (it.colour + 1) % int(canvas_palette().size());
      else
        it.item = (it.item + 1) % int(canvas_item_names().size());
      const std::string sp = canonical_caption(src_layout), tp = canonical_caption(tgt_layout);
      const auto conds = sd.conditions({sp, tp}, "", 1, 64, 64);
      const auto ws = sd.word_positions(sp), wt = sd.word_positions(tp);
      const std::string blend = canvas_item_names()[size_t(src_layout.items[0].item)] + "," +
                                canvas_item_names()[size_t(it.item)];
      for (size_t k = 0; k < settings.size(); ++k) {
        PromptToPromptOptions o;
        o.cfg = cfg, o.cross_replace = settings[k].cross, o.self_replace = settings[k].self;
        if (settings[k].blend) {  // "ankle boot": both words
          std::string words;
          for (const std::string& part : split(blend)) {
            std::istringstream ws_(part);
            for (std::string w; ws_ >> w;) words += (words.empty() ? "" : ",") + w;
          }
          o.blend = words;
        }
        const double t0 = now();
        const PromptToPromptResult r = prompt_to_prompt(sd.denoiser(), sigmas, z, true, conds[0], conds[1], ws, wt, o);
        const double secs = now() - t0;
        const torch::Tensor images = sd.decode_latents(torch::cat({r.source, r.edited}).to(torch::kFloat32));
        const auto v = judge.judge(images);
        Tally& t = tallies[{e, k}];
        ++t.n;
        t.seconds += secs;
        t.correct += canvas_correct(tgt_layout, v[1]);
        bool kept = true;
        for (int cell = 0; cell < 4; ++cell) {
          const CellVerdict &s = v[0][size_t(cell)], &d = v[1][size_t(cell)];
          if (cell != it.cell)
            kept = kept && s.present == d.present && s.item == d.item && s.colour == d.colour;
          else
            kept = kept && d.present && (e == 0 ? d.item == s.item : d.colour == s.colour);
        }
        t.kept += kept;
        auto outside = torch::ones({1, 1, 64, 64});
        outside.slice(2, (it.cell / 2) * 32, (it.cell / 2) * 32 + 32).slice(3, (it.cell % 2) * 32, (it.cell % 2) * 32 + 32).zero_();
        auto diff = (images[1] - images[0]).unsqueeze(0) * outside;
        t.sq += diff.pow(2).sum().item<double>();
        t.count += outside.sum().item<double>() * 3;
        if (i < shown) {
          if (k == 0) rows[size_t(e) * (settings.size() + 1)] = rows[size_t(e) * (settings.size() + 1)].defined()
                                                                 ? torch::cat({rows[size_t(e) * (settings.size() + 1)], images.slice(0, 0, 1)})
                                                                 : images.slice(0, 0, 1);
          auto& row = rows[size_t(e) * (settings.size() + 1) + 1 + k];
          row = row.defined() ? torch::cat({row, images.slice(0, 1, 2)}) : images.slice(0, 1, 2);
        }
        prog.update(++done);
      }
    }
  }
  prog.finish();

  std::ostringstream md;
  md << "`tweedie bench edit-text";
  for (int i = 0; i < argc; ++i) md << ' ' << argv[i];
  md << "`: " << spec << ", " << n << " seeded layouts (the prompt set of `tweedie eval`), sources generated from seeds "
     << "(DDIM, " << steps << " steps, CFG " << cfg << "); the first item's colour, then its item, changed in the prompt. "
     << "Judged by SPEC's rules with the shipped classifier. CPU: "
     << first_line_with("/proc/cpuinfo", "model name") << ".\n\n"
     << "| edit | method | target correct | kept | RMSE outside the cell | s / edit |\n|---|---|---|---|---|---|\n";
  for (int e = 0; e < 2; ++e)
    for (size_t k = 0; k < settings.size(); ++k) {
      const Tally& t = tallies[{e, k}];
      md << "| " << edits[e] << " | " << settings[k].name << " | " << fmt("%.3f", double(t.correct) / double(t.n))
         << " | " << fmt("%.3f", double(t.kept) / double(t.n)) << " | " << fmt("%.4f", std::sqrt(t.sq / t.count))
         << " | " << fmt("%.2f", t.seconds / double(t.n)) << " |\n";
    }
  md << "\n`edit_text.png`: for the first " << shown << " layouts, the sources, then one row per method (regenerate, "
     << "p2p, p2p + blend), for the colour edit and then for the item edit.\n";
  write_png(dir + "/edit_text.png", make_grid(torch::cat(rows), int(shown)));
  write_file_atomic(dir + "/edit_text.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"edit-text", "Prompt-to-Prompt colour and item edits on the FashionCanvas text model, judged by its "
                                 "judge against regenerating from the same noise (writes edit_text.md)",
                    run});

}  // namespace
}  // namespace tweedie::cli
