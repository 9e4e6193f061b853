// The trainers' shared step/time/loss log (train_log.h).
#include "train_log.h"

#include <algorithm>
#include <chrono>

#include "tweedie/io/image.h"
#include "tweedie/io/plot.h"

namespace tweedie::detail {

void TrainLog::record(double loss, int64_t log_every, int64_t total_steps) {
  log_sum += loss, ++log_n;
  if (step % log_every == 0 || step == total_steps) {
    loss_steps.push_back(double(step));
    loss_values.push_back(log_sum / double(log_n));
    log_sum = 0, log_n = 0;
  }
}

void TrainLog::append_tensors(std::vector<std::pair<std::string, torch::Tensor>>& t) const {
  t.emplace_back("train.step", torch::tensor({step}, torch::kInt64));
  t.emplace_back("train.seconds", torch::tensor({train_seconds}, torch::kFloat64));
  t.emplace_back("train.loss_steps", torch::tensor(loss_steps, torch::kFloat64));
  t.emplace_back("train.loss_values", torch::tensor(loss_values, torch::kFloat64));
  t.emplace_back("train.log_acc", torch::tensor({log_sum, double(log_n)}, torch::kFloat64));
}

void TrainLog::load_tensors(const SafeTensors& ck) {
  step = ck.at("train.step").item<int64_t>();
  train_seconds = ck.at("train.seconds").item<double>();
  auto ls = ck.at("train.loss_steps").contiguous(), lv = ck.at("train.loss_values").contiguous();
  loss_steps.assign(ls.data_ptr<double>(), ls.data_ptr<double>() + ls.numel());
  loss_values.assign(lv.data_ptr<double>(), lv.data_ptr<double>() + lv.numel());
  auto acc = ck.at("train.log_acc");
  log_sum = acc[0].item<double>();
  log_n = int64_t(acc[1].item<double>());
}

void TrainLog::run(int64_t total_steps, int64_t log_every, int64_t batch_size, const std::function<double()>& lr,
                   const std::function<double()>& one_step, const std::function<void()>& after_step,
                   const std::function<void(const TrainStats&)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  const double before = train_seconds;
  const int64_t first = step;
  while (step < total_steps) {
    const double rate = lr();
    const double loss = one_step();
    train_seconds = before + since();
    record(loss, log_every, total_steps);
    after_step();
    if (progress)
      progress({step, total_steps, loss, rate, double((step - first) * batch_size) / std::max(1e-9, since())});
  }
}

void TrainLog::plot_loss(const std::string& path, const std::string& title, int64_t log_every) const {
  if (loss_steps.empty()) return;
  PlotOptions po;
  po.title = title;
  po.xlabel = "step";
  po.ylabel = "loss (mean over " + std::to_string(log_every) + " steps)";
  po.logy = true;
  po.legend = false;
  write_png(path, plot({Series{"loss", loss_steps, loss_values, false}}, po));
}

}  // namespace tweedie::detail
