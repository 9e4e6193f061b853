// tweedie bench restore: PSNR and SSIM of every restoration solver and
// baseline on every task (operator.h's task_names) and measurement noise
// level, over the first N Fashion-MNIST test images, restored with the
// shipped model (unconditionally: the class is not given). Every solver of a
// task sees the same measurements and the same start noise. A solver that
// cannot run a task (RePaint and Blended Diffusion off masks, bicubic off
// super-resolution, a solver needing an SVD the operator lacks) is shown as
// "—"; denoising at sigma_y = 0 (y = x) is left out. Writes restore.md (one
// table per sigma_y, rows tasks, columns solvers, "PSNR / SSIM", the best
// PSNR of each row in bold) and restore.png (examples: per task and sigma_y,
// the first images' truth, A^+ y and every solver's restoration).
// With --resume, every finished (sigma_y, task, solver) cell is also kept in
// OUT/restore.cells.json (written atomically after each cell) under a key of
// everything that determines it (the model by its content hash, so the file
// travels with a checkout), and a rerun with the same options skips the
// cells already there: a run of several hours can be stopped and continued.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "cli.h"
#include "model_spec.h"
#include "tweedie/core/error.h"
#include "tweedie/eval/image_metrics.h"
#include "tweedie/io/fs.h"
#include "tweedie/io/image.h"
#include "tweedie/io/plot.h"
#include "tweedie/process/schedule.h"
#include "tweedie/restore/solver.h"
#include "tweedie/train/dataset.h"

namespace tweedie::cli {
namespace {

torch::Generator seeded(uint64_t s) { return at::make_generator<at::CPUGeneratorImpl>(s); }

// Why `info` cannot run on `op` ("" if it can).
std::string cannot_run(const RestoreSolverInfo& info, const Operator& op, double sigma_y) {
  if (info.masks_only && !op.is_mask()) return "masks only";
  if (info.needs_svd && !op.has_svd()) return "no SVD";
  if (info.name == "bicubic" && op.sr_factor() == 0) return "super-resolution only";
  if (sigma_y > 0 && !op.has_svd() && (info.name == "ddnm+" || info.name == "pigdm")) return "no SVD";
  return "";
}

struct Cell {
  bool ran = false;
  double psnr = 0, ssim = 0, seconds = 0;
  int nfe = 0;
};

std::vector<double> numbers(const std::string& list, const char* what) {
  std::vector<double> v;
  for (auto& t : split(list)) {
    char* end = nullptr;
    const double x = std::strtod(t.c_str(), &end);
    check(end && *end == 0 && std::isfinite(x) && x >= 0, "tweedie bench restore: ", what, " entry '", t,
          "' is not a number >= 0");
    v.push_back(x);
  }
  check(!v.empty(), "tweedie bench restore: ", what, " is empty");
  return v;
}

// --resume: finished cells by key (see the top of the file).
class CellCache {
 public:
  CellCache(std::string path, bool on) : path_(std::move(path)), on_(on) {
    if (!on_ || !std::ifstream(path_).good()) return;
    try {
      j_ = nlohmann::json::parse(read_file(path_));
      check(j_.is_object() && j_.value("version", 0) == 1 && j_.contains("cells") && j_["cells"].is_object(),
            "not a cell cache of this version");
    } catch (const std::exception& e) {
      fail(path_, ": cannot resume from it (", e.what(), "); delete it to start over");
    }
  }
  bool on() const { return on_; }
  bool has(const std::string& key) const { return on_ && j_.contains("cells") && j_["cells"].contains(key); }
  // Cached cell and its example tiles, if present.
  bool find(const std::string& key, Cell& c, torch::Tensor& examples, c10::IntArrayRef tile_shape) const {
    if (!has(key)) return false;
    try {
      const auto& e = j_["cells"][key];
      c.ran = true;
      c.psnr = e.at("psnr").get<double>(), c.ssim = e.at("ssim").get<double>();
      c.seconds = e.at("seconds").get<double>(), c.nfe = e.at("nfe").get<int>();
      const auto v = e.at("examples").get<std::vector<float>>();
      std::vector<int64_t> shape{-1};
      shape.insert(shape.end(), tile_shape.begin(), tile_shape.end());
      examples = torch::tensor(v).reshape(shape);
    } catch (const std::exception& e) {
      fail(path_, ": cell '", key, "' is malformed (", e.what(), "); delete the file to start over");
    }
    return true;
  }
  void add(const std::string& key, const Cell& c, const torch::Tensor& examples) {
    if (!on_) return;
    if (!j_.is_object() || !j_.contains("cells")) j_ = {{"version", 1}, {"cells", nlohmann::json::object()}};
    auto ex = examples.to(torch::kFloat32).contiguous();
    j_["cells"][key] = {{"psnr", c.psnr},
                        {"ssim", c.ssim},
                        {"seconds", c.seconds},
                        {"nfe", c.nfe},
                        {"examples", std::vector<float>(ex.data_ptr<float>(), ex.data_ptr<float>() + ex.numel())}};
    write_file_atomic(path_, j_.dump() + "\n");
  }

 private:
  std::string path_;
  bool on_;
  nlohmann::json j_;
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

int bench_restore(int argc, char** argv) {
  std::string all_tasks, all_solvers;
  for (auto& t : task_names()) all_tasks += (all_tasks.empty() ? "" : ",") + t;
  for (auto& s : restore_solvers()) all_solvers += (all_solvers.empty() ? "" : ",") + s.name;
  Args a("bench restore", "[options]",
         {{"model", "m", false, "model file (default: the shipped Fashion-MNIST model)", ""},
          {"num", "n", false, "test images (the first N of fashion-mnist:test)", "500"},
          {"steps", "s", false, "steps of every diffusion solver", "50"},
          {"schedule", "", false, "step schedule", "karras"},
          {"tasks", "", false, "comma-separated tasks", all_tasks},
          {"solvers", "", false, "comma-separated solvers and baselines", all_solvers},
          {"sigma-y", "", false, "comma-separated measurement noise levels (images in [-1, 1])", "0,0.05"},
          {"batch", "", false, "images per solver run", "100"},
          {"examples", "", false, "images per task and noise level in restore.png", "2"},
          {"seed", "", false, "random seed (masks, projections, measurement noise, start noise)", "0"},
          {"resume", "", true, "keep finished cells in OUT/restore.cells.json and skip those already there", ""},
          {"out", "o", false, "output directory for restore.md and restore.png", "bench/results"},
          {"quiet", "q", true, "no progress on stderr", ""}});
  if (!a.parse(argc, argv)) return 0;
  const char* cmd = "tweedie bench restore";
  const int64_t n = a.integer("num"), batch = a.integer("batch"), examples = a.integer("examples");
  const int steps = a.integer("steps");
  check(n >= 1, cmd, ": -n must be >= 1");
  check(batch >= 1, cmd, ": --batch must be >= 1");
  check(steps >= 1, cmd, ": --steps must be >= 1");
  check(examples >= 0 && examples <= n, cmd, ": --examples must be in [0, n]");
  const uint64_t seed = uint64_t(a.integer("seed"));
  std::vector<std::string> tasks = split(a.str("tasks"));
  std::vector<const RestoreSolverInfo*> solvers;
  for (auto& s : split(a.str("solvers"))) solvers.push_back(&find_restore_solver(s));
  check(!tasks.empty() && !solvers.empty(), cmd, ": no tasks or no solvers given");
  const std::vector<double> sigmas_y = numbers(a.str("sigma-y"), "--sigma-y");
  const std::string outdir = a.str("out");
  check(is_directory(outdir), cmd, ": output directory '", outdir, "' does not exist");
  const std::string spec = a.has("model") ? a.str("model") : default_model_path();
  check(ends_with(spec, ".safetensors"), cmd, ": --model must be an image model file (.safetensors), got '", spec,
        "'");
  for (auto& t : tasks) make_task_operator(t, {1, 8, 8}, seeded(0));  // names checked before loading anything
  make_schedule(a.str("schedule"), *make_process("vp"), 2);

  LoadedModel model = load_model(spec, "", "");
  const std::string model_id = file_identity(spec);  // the cache key follows the file's content, not its place
  const auto& shape = model.sample_shape;
  Dataset data = load_dataset("fashion-mnist:test");
  check(n <= data.size(), cmd, ": -n ", n, " is more than the ", data.size(), " test images");
  check(data.channels() == shape[0] && data.height() == shape[1] && data.width() == shape[2], cmd, ": the model takes ",
        c10::IntArrayRef(shape), " images, the test set has [", data.channels(), ", ", data.height(), ", ",
        data.width(), "]");
  const torch::Tensor truth = data.batch_images(torch::arange(n, torch::kInt64));  // [n, C, H, W] in [-1, 1]
  const Process& proc = model.denoiser->process();
  const std::vector<double> levels = make_schedule(a.str("schedule"), proc, steps);
  const RestoreOptions ro;
  const int64_t chunks = (n + batch - 1) / batch;
  CellCache cache(outdir + "/restore.cells.json", a.has("resume"));
  auto key = [&](const std::string& task, double sy, const std::string& solver) {
    return model_id + "|n " + std::to_string(n) + "|steps " + std::to_string(steps) + "|" + a.str("schedule") + "|seed " +
           std::to_string(seed) + "|batch " + std::to_string(batch) + "|examples " + std::to_string(examples) + "|" +
           task + "|sigma_y " + fmt("%.17g", sy) + "|" + solver;
  };

  // Work for the progress line: NFE x images (a baseline counts as one step).
  int64_t total = 0;
  for (double sy : sigmas_y)
    for (auto& t : tasks) {
      if (t == "denoise" && sy == 0) continue;
      auto op = make_task_operator(t, shape, seeded(seed));
      for (auto* s : solvers)
        if (cannot_run(*s, *op, sy).empty() && !cache.has(key(t, sy, s->name)))
          total += std::max(1, restore_nfe(*s, steps, ro)) * n;
    }
  Progress prog("bench restore", int(std::min<int64_t>(total, INT32_MAX)), !a.has("quiet"));
  int64_t done = 0;

  // cells[sigma][task][solver]; example tiles per (sigma, task): truth, A^+ y, solvers.
  std::vector<std::vector<std::vector<Cell>>> cells(sigmas_y.size());
  std::vector<torch::Tensor> tiles;
  std::vector<std::string> tile_rows;  // restore.png's row labels: task and sigma_y
  const double t_start = now();
  torch::NoGradGuard no_grad;
  for (size_t si = 0; si < sigmas_y.size(); ++si) {
    const double sy = sigmas_y[si];
    for (size_t ti = 0; ti < tasks.size(); ++ti) {
      cells[si].emplace_back(solvers.size());
      const std::string& task = tasks[ti];
      if (task == "denoise" && sy == 0) continue;
      auto op = make_task_operator(task, shape, seeded(seed));  // the same mask / projection at every sigma_y
      auto ygen = seeded(seed + 1000 * (si + 1) + ti);
      Measurement m{op, op->measure(truth, sy, ygen), sy};
      std::vector<torch::Tensor> row{truth.slice(0, 0, examples), op->pinv(m.y.slice(0, 0, examples))};
      for (size_t k = 0; k < solvers.size(); ++k) {
        const RestoreSolverInfo& info = *solvers[k];
        Cell& c = cells[si][ti][k];
        if (!cannot_run(info, *op, sy).empty()) {
          row.push_back(torch::ones_like(row[0]));  // white tile: does not apply
          continue;
        }
        torch::Tensor cached;
        if (cache.find(key(task, sy, info.name), c, cached, shape)) {
          check(cached.size(0) == examples, cmd, ": ", info.name, " on ", task, ": the cache holds ", cached.size(0),
                " example images");
          row.push_back(cached);
          continue;
        }
        std::vector<torch::Tensor> outs;
        const double t0 = now();
        for (int64_t b = 0; b < chunks; ++b) {
          const int64_t lo = b * batch, hi = std::min(n, lo + batch);
          auto gen = seeded(seed + 7919 * (b + 1) + 104729 * (ti + 1) + 1299709 * (si + 1));
          auto x = at::randn({hi - lo, shape[0], shape[1], shape[2]}, gen) * levels[0];
          SamplerRun run(*model.denoiser, levels, {}, {}, gen);
          const int64_t before = done;
          run.callback = [&](const StepInfo&) {
            done = before + run.nfe * (hi - lo);
            prog.update(int(std::min<int64_t>(done, INT32_MAX)), info.name + " " + task + " sigma_y " + fmt("%g", sy));
          };
          outs.push_back(run_restore(info, run, {op, m.y.slice(0, lo, hi), sy}, x, ro));
          done = before + std::max(1, run.nfe) * (hi - lo);
          c.nfe = run.nfe;
        }
        auto out = torch::cat(outs).clamp(-1, 1);
        check(torch::isfinite(out).all().item<bool>(), cmd, ": ", info.name, " on ", task, " gave non-finite values");
        auto unit = [](const torch::Tensor& t) { return ((t + 1) / 2).clamp(0, 1); };
        c.ran = true;
        c.psnr = psnr(unit(out), unit(truth)).mean().item<double>();
        c.ssim = ssim(unit(out), unit(truth)).mean().item<double>();
        c.seconds = now() - t0;
        row.push_back(out.slice(0, 0, examples));
        cache.add(key(task, sy, info.name), c, row.back());
      }
      // Tiles: one row per example image.
      for (int64_t e = 0; e < examples; ++e) {
        for (auto& r : row) tiles.push_back(r[e].clamp(-1, 1));
        tile_rows.push_back(task + " " + fmt("%g", sy));
      }
    }
  }
  prog.finish();
  double cell_seconds = 0;  // with --resume, the time of every cell, also of earlier runs
  for (auto& per_task : cells)
    for (auto& per_solver : per_task)
      for (auto& c : per_solver) cell_seconds += c.seconds;
  const double minutes = (cache.on() ? cell_seconds : now() - t_start) / 60;

  std::ostringstream md;
  md << "# Inverse problems: PSNR / SSIM on Fashion-MNIST\n\n`tweedie bench restore";
  for (int i = 0; i < argc; ++i) md << " " << argv[i];
  md << "`: " << model_id << " (unconditional), the first " << n << " images of fashion-mnist:test, " << steps
     << " steps (schedule " << a.str("schedule") << "), seed " << seed << "; " << fmt("%.1f", minutes)
     << " minutes. PSNR in dB and SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5) on images in [0, 1], "
        "averaged over the images; the best PSNR of each row in bold. NFE per image in the header. \"—\": the "
        "solver does not apply to the task (RePaint, Blended Diffusion: masks only; bicubic: super-resolution "
        "only). Tasks: inpaint-box (centred 14x14 box missing), inpaint-random (half the pixels missing), sr2 / sr4 "
        "(average pooling), sr4-bicubic (bicubic downsampling), blur (Gaussian, std 1.5 px, cutoff 0.02), "
        "motion-blur (7 px line at 45 degrees, cutoff 0.05), cs (random Gaussian projections, 25 %), denoise. "
        "Baselines: pinv = A^+ y, bicubic = bicubic upsampling of y, tikhonov = (A^T A + lambda I)^-1 A^T y with "
        "lambda by the discrepancy principle (= A^+ y at sigma_y = 0).\n";
  for (size_t si = 0; si < sigmas_y.size(); ++si) {
    md << "\n**sigma_y = " << fmt("%g", sigmas_y[si]) << "**" << (sigmas_y[si] == 0 ? " (denoise left out: y = x)" : "")
       << "\n\n| task |";
    for (size_t k = 0; k < solvers.size(); ++k) {
      int nfe = 0;
      for (auto& row : cells[si]) nfe = std::max(nfe, row[k].nfe);
      md << " " << solvers[k]->name << (solvers[k]->baseline ? "" : " (" + std::to_string(nfe) + ")") << " |";
    }
    md << "\n|---|";
    for (size_t k = 0; k < solvers.size(); ++k) md << "---|";
    md << "\n";
    for (size_t ti = 0; ti < tasks.size(); ++ti) {
      if (tasks[ti] == "denoise" && sigmas_y[si] == 0) continue;
      double best = -INFINITY;
      for (auto& c : cells[si][ti])
        if (c.ran) best = std::max(best, c.psnr);
      md << "| " << tasks[ti] << " |";
      for (auto& c : cells[si][ti]) {
        if (!c.ran) {
          md << " — |";
          continue;
        }
        const std::string cell = fmt("%.2f", c.psnr) + " / " + fmt("%.3f", c.ssim);
        md << " " << (c.psnr == best ? "**" + cell + "**" : cell) << " |";
      }
      md << "\n";
    }
  }
  md << "\nSeconds per solver and task (all " << n << " images, all noise levels added up; wall time, which other "
        "jobs on the machine may have shared: not a speed measurement):\n\n| task |";
  for (auto* s : solvers) md << " " << s->name << " |";
  md << "\n|---|";
  for (size_t k = 0; k < solvers.size(); ++k) md << "---|";
  md << "\n";
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    md << "| " << tasks[ti] << " |";
    for (size_t k = 0; k < solvers.size(); ++k) {
      double secs = 0;
      bool ran = false;
      for (size_t si = 0; si < sigmas_y.size(); ++si) secs += cells[si][ti][k].seconds, ran |= cells[si][ti][k].ran;
      md << " " << (ran ? fmt("%.0f", secs) : "—") << " |";
    }
    md << "\n";
  }
  const int cols = int(2 + solvers.size());
  if (examples > 0) {
    md << "\n![examples](restore.png)\n\nrestore.png: for each noise level and task (rows labelled \"task sigma_y\"), "
       << examples << " row(s), one per test image; columns: truth, A^+ y, then every solver (white: does not "
          "apply).\n";
    std::vector<std::string> heads{"truth", "A^+ y"};
    for (auto* s : solvers) heads.push_back(s->name);
    Image img = labeled_grid(torch::stack(tiles), cols, heads, tile_rows);
    img.text["parameters"] = "bench restore -n " + std::to_string(n) + " --steps " + std::to_string(steps);
    write_png(outdir + "/restore.png", img);
  }
  write_file_atomic(outdir + "/restore.md", md.str());
  std::printf("%s", md.str().c_str());
  return 0;
}

BenchRegistrar reg({"restore", "PSNR / SSIM of every restoration solver and baseline on every task", bench_restore});

}  // namespace
}  // namespace tweedie::cli
