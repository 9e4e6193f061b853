// tweedie bench edit-text: text edits on the FashionCanvas model, judged by
// SPEC's judge. For n seeded layouts (the prompt set of `tweedie eval`),
// three edits of the first item: its colour (the next palette colour), its
// item (the next Fashion-MNIST class) and its cell (the next empty cell;
// layouts with four items are skipped); the source prompt is the canonical
// caption, the target the caption with those words changed. Each source is
// generated from a seed (noise seed + layout index), or with --real is the
// test-split canvas of the layout (encoded, inverted by direct inversion,
// Ju et al. 2024: the source branch returns the input exactly), and edited by:
//   regenerate        the target prompt sampled from the same noise (what a
//                     user gets without an edit method: the two prompts' own
//                     samples)
//   p2p, p2p + blend  Prompt-to-Prompt with its default windows, and with
//                     local blending on the edited item's words
//   masactrl, masactrl + mask  MasaCtrl with its defaults, and with the
//                     foreground masks of the item's words
//   pnp               Plug-and-Play with its defaults
// Reported per edit and method: the share of edited images the judge finds
// correct for the target caption; the share where everything the edit
// should keep is kept (every other cell judged as in the source; the edited
// item keeps its other attributes); the RMSE of the pixels outside the
// edited cells against the source ([-1, 1] scale); seconds per edit. Writes
// edit_text.md and edit_text.png (per edit: sources, then one row per method),
// edit_text_real.md and edit_text_real.png with --real.
#include <algorithm>
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
#include "tweedie/edit/masactrl.h"
#include "tweedie/edit/plug_and_play.h"
#include "tweedie/edit/prompt_to_prompt.h"
#include "tweedie/eval/canvas_judge.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/process/schedule.h"
#include "tweedie/train/fashion_canvas.h"

namespace tweedie::cli {
namespace {

struct Setting {
  std::string name;
  std::string method;  // p2p | masactrl | pnp
  double a, b;         // p2p: cross, self replace (0, 0: regenerate); pnp: features, attention
  bool words;          // blend / mask on the item's words
};

struct Tally {
  int64_t n = 0, correct = 0, kept = 0;
  double sq = 0, count = 0, seconds = 0;
};

int run(int argc, char** argv) {
  Args a("bench edit-text", "[-m MODEL] [options]",
         {{"model", "m", false, "FashionCanvas text model (default: models/fashion_canvas.safetensors)", ""},
          {"num", "n", false, "layouts (each edited three times: colour, item, cell)", "32"},
          {"steps", "s", false, "sampler steps", "20"},
          {"cfg", "", false, "CFG scale", "5"},
          {"schedule", "", false, "step schedule", "karras"},
          {"seed", "", false, "prompt set and noise seed", "0"},
          {"real", "", true, "edit the layouts' test-split canvases (encoded, inverted by direct inversion) instead "
                             "of sources generated from seeds", ""},
          {"tokenizer", "", false, "folder with vocab.json + merges.txt (or $TWEEDIE_TOKENIZER)", ""},
          {"out", "o", false, "output folder (must exist) for edit_text[_real].md and .png", "bench/results"},
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
  const bool real = a.has("real");
  const FashionCanvas test("test");
  const auto layouts = canvas_prompt_set(n, seed);
  const std::vector<double> sigmas = make_schedule(a.str("schedule"), sd.process(), steps);
  const std::vector<Setting> settings = {{"regenerate", "p2p", 0, 0, false},   {"p2p", "p2p", 0.8, 0.4, false},
                                         {"p2p + blend", "p2p", 0.8, 0.4, true}, {"masactrl", "masactrl", 0, 0, false},
                                         {"masactrl + mask", "masactrl", 0, 0, true}, {"pnp", "pnp", 0.8, 0.5, false}};
  const char* edits[] = {"colour", "item", "cell"};
  const int kinds = 3;
  std::map<std::pair<int, size_t>, Tally> tallies;
  std::vector<std::vector<torch::Tensor>> rows(size_t(kinds), std::vector<torch::Tensor>(settings.size() + 1));
  const int64_t shown = std::min<int64_t>(n, 8);
  Progress prog("bench edit-text", int(n * kinds * int64_t(settings.size())), !a.has("quiet"));
  int done = 0;
  std::vector<int64_t> examples(size_t(kinds), 0);
  torch::NoGradGuard ng;
  for (int64_t i = 0; i < n; ++i) {
    const CanvasLayout& src_layout = layouts[size_t(i)];
    torch::Tensor z;  // unit noise, or the real canvas's latent
    if (real) {
      const torch::Tensor canvas = test.render(src_layout, test.pick_sources(src_layout, seed, i));  // uint8
      z = sd.encode_images(canvas.unsqueeze(0).to(torch::kFloat32) / 127.5 - 1);
    } else {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + uint64_t(i));
      z = at::randn({1, sd.latent_channels(), 16, 16}, gen, torch::kFloat32);
    }
    for (int e = 0; e < kinds; ++e) {
      CanvasLayout tgt_layout = src_layout;
      CanvasItem& it = tgt_layout.items[0];
      const int from_cell = it.cell;
      if (e == 0) {
        it.colour = (it.colour + 1) % int(canvas_palette().size());
      } else if (e == 1) {
        it.item = (it.item + 1) % int(canvas_item_names().size());
      } else {
        if (src_layout.items.size() == 4) {  // no empty cell to move to
          done += int(settings.size());
          continue;
        }
        int to = from_cell;
        do to = (to + 1) % 4;
        while (src_layout.at(to) != nullptr);
        it.cell = to;
        std::sort(tgt_layout.items.begin(), tgt_layout.items.end(),
                  [](const CanvasItem& x, const CanvasItem& y) { return x.cell < y.cell; });
      }
      const CanvasItem& moved = *tgt_layout.at(e == 2 ? it.cell : from_cell);
      const std::string sp = canonical_caption(src_layout), tp = canonical_caption(tgt_layout);
      const auto conds = sd.conditions({sp, tp}, "", 1, 64, 64);
      const auto ws = sd.word_positions(sp), wt = sd.word_positions(tp);
      std::string words;  // the item's words in both prompts ("ankle boot": both)
      for (const std::string& part : {canvas_item_names()[size_t(src_layout.items[0].item)],
                                      canvas_item_names()[size_t(moved.item)]}) {
        std::istringstream in(part);
        for (std::string w; in >> w;) words += (words.empty() ? "" : ",") + w;
      }
      for (size_t k = 0; k < settings.size(); ++k) {
        const Setting& st = settings[k];
        const double t0 = now();
        torch::Tensor source, edited;
        if (st.method == "p2p") {
          PromptToPromptOptions o;
          o.pair.cfg = cfg, o.cross_replace = st.a, o.self_replace = st.b;
          if (st.words) o.blend = words;
          const PromptToPromptResult r = prompt_to_prompt(sd.denoiser(), sigmas, z, !real, conds[0], conds[1], ws, wt, o);
          source = r.source, edited = r.edited;
        } else if (st.method == "pnp") {
          PlugAndPlayOptions o;
          o.pair.cfg = cfg, o.features = st.a, o.attention = st.b;
          const PlugAndPlayResult r = plug_and_play(sd.denoiser(), sigmas, z, !real, conds[0], conds[1], o);
          source = r.source, edited = r.edited;
        } else {
          MasaCtrlOptions o;
          o.pair.cfg = cfg;
          if (st.words) o.mask = words;
          const MasaCtrlResult r = masactrl(sd.denoiser(), sigmas, z, !real, conds[0], conds[1], ws, wt, o);
          source = r.source, edited = r.edited;
        }
        const double secs = now() - t0;
        const torch::Tensor images = sd.decode_latents(torch::cat({source, edited}).to(torch::kFloat32));
        const auto v = judge.judge(images);
        Tally& t = tallies[{e, k}];
        ++t.n;
        t.seconds += secs;
        t.correct += canvas_correct(tgt_layout, v[1]);
        const CellVerdict& was = v[0][size_t(from_cell)];
        bool kept = true;
        for (int cell = 0; cell < 4; ++cell) {
          const CellVerdict &s0 = v[0][size_t(cell)], &d = v[1][size_t(cell)];
          if (cell == from_cell && e < 2)  // the edited item keeps its other attribute
            kept = kept && d.present && (e == 0 ? d.item == s0.item : d.colour == s0.colour);
          else if (e == 2 && cell == it.cell)  // the moved item arrives as it was
            kept = kept && d.present && d.item == was.item && d.colour == was.colour;
          else if (e == 2 && cell == from_cell)
            kept = kept && !d.present;
          else
            kept = kept && s0.present == d.present && s0.item == d.item && s0.colour == d.colour;
        }
        t.kept += kept;
        auto outside = torch::ones({1, 1, 64, 64});
        for (int cell : {from_cell, it.cell})
          outside.slice(2, (cell / 2) * 32, (cell / 2) * 32 + 32).slice(3, (cell % 2) * 32, (cell % 2) * 32 + 32).zero_();
        auto diff = (images[1] - images[0]).unsqueeze(0) * outside;
        t.sq += diff.pow(2).sum().item<double>();
        t.count += outside.sum().item<double>() * 3;
        if (examples[size_t(e)] < shown) {
          auto add = [](torch::Tensor& row, const torch::Tensor& img) { row = row.defined() ? torch::cat({row, img}) : img; };
          if (k == 0) add(rows[size_t(e)][0], images.slice(0, 0, 1));
          add(rows[size_t(e)][k + 1], images.slice(0, 1, 2));
          if (k + 1 == settings.size()) ++examples[size_t(e)];
        }
        prog.update(++done);
      }
    }
  }
  prog.finish();

  std::ostringstream md;
  md << "`tweedie bench edit-text";
  for (int i = 0; i < argc; ++i) md << ' ' << argv[i];
  md << "`: " << spec << ", " << n << " seeded layouts (the prompt set of `tweedie eval`), "
     << (real ? "sources the layouts' test-split canvases, encoded and inverted by direct inversion "
              : "sources generated from seeds ")
     << "(DDIM, " << steps << " steps, CFG " << cfg << "); the first item's colour, its item, then its cell changed in the "
     << "prompt. "
     << "Judged by SPEC's rules with the shipped classifier. CPU: "
     << first_line_with("/proc/cpuinfo", "model name") << ".\n\n"
     << "| edit | method | layouts | target correct | kept | RMSE outside the cells | s / edit |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (int e = 0; e < kinds; ++e)
    for (size_t k = 0; k < settings.size(); ++k) {
      const Tally& t = tallies[{e, k}];
      if (t.n == 0) continue;
      md << "| " << edits[e] << " | " << settings[k].name << " | " << t.n << " | "
         << fmt("%.3f", double(t.correct) / double(t.n)) << " | " << fmt("%.3f", double(t.kept) / double(t.n)) << " | "
         << fmt("%.4f", std::sqrt(t.sq / t.count)) << " | " << fmt("%.2f", t.seconds / double(t.n)) << " |\n";
    }
  const std::string name = real ? "/edit_text_real" : "/edit_text";
  md << "\n`" << name.substr(1) << ".png`: for each edit (colour, item, cell) and its first layouts, the sources, then one row per "
     << "method in the table's order.\n";
  std::vector<torch::Tensor> all;
  for (auto& kind : rows)
    for (auto& r : kind)
      if (r.defined()) all.push_back(r.size(0) < shown ? torch::cat({r, -torch::ones({shown - r.size(0), 3, 64, 64})}) : r);
  write_png(dir + name + ".png", make_grid(torch::cat(all), int(shown)));
  write_file_atomic(dir + name + ".md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"edit-text", "Prompt-to-Prompt, MasaCtrl and Plug-and-Play colour, item and cell edits on the FashionCanvas text "
                                 "model, judged by its judge against regenerating from the same noise (writes edit_text.md)",
                    run});

}  // namespace
}  // namespace tweedie::cli
