// Chunked generation and NFE budgets (include/tweedie/sample/generate.h).
// Verified in tests/test_eval.cpp (chunked = whole for deterministic
// samplers; steps_for_nfe against each sampler's evaluations per step).
#include "tweedie/sample/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "tweedie/core/error.h"
#include "tweedie/process/schedule.h"

namespace tweedie {

namespace {

// x0 = 0 everywhere: the cheapest model a sampler can be run on to count its calls.
class ZeroDenoiser : public Denoiser {
 public:
  ZeroDenoiser() : proc_(make_process("vp")) {}
  const Process& process() const override { return *proc_; }
  Prediction predict(const torch::Tensor& x, double s, const Cond&) override {
    return Prediction::from_x0(torch::zeros_like(x), x, s, *proc_);
  }

 private:
  ProcessPtr proc_;
};

}  // namespace

int nfe_of(const SamplerInfo& s, int steps) {
  check(steps >= 1, "steps must be >= 1 (got ", steps, ")");
  ZeroDenoiser d;
  SamplerRun run(d, make_schedule("karras", d.process(), steps), {}, {},
                 at::make_generator<at::CPUGeneratorImpl>(0));
  run_sampler(s, run, torch::ones({1, 1}));
  return run.nfe;
}

int steps_for_nfe(const SamplerInfo& s, int nfe) {
  check(nfe >= 1, "NFE budget must be >= 1 (got ", nfe, ")");
  for (int steps = nfe; steps >= 1; --steps)
    if (nfe_of(s, steps) <= nfe) return steps;
  fail("sampler '", s.name, "' needs ", nfe_of(s, 1), " evaluations for a single step, more than the budget of ",
       nfe);
}

Generated generate(Denoiser& d, const SamplerInfo& s, const std::vector<double>& sigmas, const torch::Tensor& noise,
                   const Cond& cond, const GenerateOptions& opt, torch::Generator gen) {
  check(noise.dim() >= 1 && noise.size(0) >= 1, "generate: no samples asked for");
  check(opt.batch >= 0, "generate: batch must be >= 0 (got ", opt.batch, ")");
  const int64_t n = noise.size(0), chunks = chunks_of(n, opt.batch), b = (n + chunks - 1) / chunks;
  const int64_t steps = int64_t(sigmas.size()) - 1;
  auto rows = [&](const torch::Tensor& t, int64_t i, int64_t len, const char* what) {
    if (!t.defined()) return t;
    check(t.size(0) == n, "generate: ", what, " has ", t.size(0), " rows for ", n, " samples");
    return t.narrow(0, i, len);
  };
  std::vector<torch::Tensor> out;
  Generated g;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i = c * b, len = std::min(b, n - i);
    Cond part = cond;
    part.labels = rows(cond.labels, i, len, "labels");
    part.context = rows(cond.context, i, len, "context");
    torch::Tensor x = noise.narrow(0, i, len) * sigmas.front();
    int nfe = 0;
    // Levels [first, end) of the schedule as one sampler run, numbered as steps of the whole.
    auto run_part = [&](int64_t first, int64_t end) {
      SamplerRun run(d, std::vector<double>(sigmas.begin() + first, sigmas.begin() + end + 1), part, opt.sampler, gen);
      run.step_offset = int(first);
      run.total_steps = int(steps);
      if (opt.progress)
        run.callback = [&](const StepInfo& st) { opt.progress(c * steps + first + st.step + 1, chunks * steps); };
      x = run_sampler(s, run, x);
      nfe += run.nfe;
    };
    const int64_t k = opt.update ? std::clamp<int64_t>(opt.update_steps, 0, steps) : 0;
    for (int64_t j = 0; j < k; ++j) {
      x = opt.update(int(j), int(steps), sigmas[size_t(j)], x, part);
      check(torch::isfinite(x).all().item<bool>(), "generate: the state update of step ", j, " is not finite");
      run_part(j, j + 1);
    }
    if (k < steps) run_part(k, steps);
    out.push_back(x);
    g.nfe = nfe;
  }
  g.x = out.size() == 1 ? out[0] : torch::cat(out);
  return g;
}

}  // namespace tweedie
