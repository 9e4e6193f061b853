// Operator base (shape checks, measurement y = A x + sigma_y n, the SVD
// defaults for operators without one) and the task factory. The operators
// themselves live one per file: mask.cpp, avgpool.cpp, bicubic.cpp, blur.cpp,
// motion_blur.cpp, random_projection.cpp, identity.cpp.
#include "tweedie/restore/operator.h"

#include <ATen/CPUGeneratorImpl.h>

#include "tweedie/core/error.h"

namespace tweedie {

Operator::Operator(std::vector<int64_t> in_shape) : in_shape_(std::move(in_shape)) {
  check(in_shape_.size() == 3 && in_shape_[0] > 0 && in_shape_[1] > 0 && in_shape_[2] > 0,
        "operators take images [C, H, W], got shape ", c10::IntArrayRef(in_shape_));
}

int64_t Operator::in_dim() const {
  int64_t d = 1;
  for (auto v : in_shape_) d *= v;
  return d;
}

int64_t Operator::out_dim() const {
  int64_t d = 1;
  for (auto v : out_shape()) d *= v;
  return d;
}

namespace {
void check_shape(const torch::Tensor& t, const std::vector<int64_t>& want, const std::string& op, const char* what) {
  std::string dims;
  for (auto d : want) dims += ", " + std::to_string(d);
  check(t.defined() && t.dim() == int64_t(want.size()) + 1 && t.sizes().slice(1).vec() == want, "operator ", op,
        " expects ", what, " [N", dims, "], got ",
        t.defined() ? c10::str(t.sizes()) : std::string("an undefined tensor"));
  check(t.is_floating_point(), "operator ", op, " expects a floating-point ", what, ", got ", t.scalar_type());
}
}  // namespace

void Operator::check_x(const torch::Tensor& x) const { check_shape(x, in_shape_, name(), "x"); }
void Operator::check_y(const torch::Tensor& y) const { check_shape(y, out_shape(), name(), "y"); }

void Operator::require_svd(const std::string& who) const {
  check(has_svd(), who, " needs an operator with a known SVD; '", name(), "' has none");
}

torch::Tensor Operator::Vt(const torch::Tensor&) const { require_svd("Vt"); return {}; }
torch::Tensor Operator::V(const torch::Tensor&) const { require_svd("V"); return {}; }
torch::Tensor Operator::Ut(const torch::Tensor&) const { require_svd("Ut"); return {}; }
torch::Tensor Operator::U(const torch::Tensor&) const { require_svd("U"); return {}; }
torch::Tensor Operator::singulars() const { require_svd("singulars"); return {}; }

torch::Tensor Operator::spectral_singulars() const {
  auto s = singulars().to(torch::kFloat64);
  s = torch::where(s > cutoff_, s, torch::zeros_like(s));
  return torch::cat({s, torch::zeros({in_dim() - s.size(0)}, torch::kFloat64)});
}

torch::Tensor Operator::noise(const torch::Tensor& y, torch::Generator gen) const {
  return at::randn(y.sizes(), gen, y.options());
}

torch::Tensor Operator::measure(const torch::Tensor& x, double sigma_y, torch::Generator gen) const {
  check(std::isfinite(sigma_y) && sigma_y >= 0, "sigma_y must be >= 0 (got ", sigma_y, ")");
  torch::Tensor y = A(x);
  if (sigma_y > 0) y = y + noise(y, gen) * sigma_y;
  return y;
}

std::vector<std::string> task_names() {
  return {"inpaint-box", "inpaint-random", "sr2", "sr4", "sr4-bicubic", "blur", "motion-blur", "cs", "denoise"};
}

OperatorPtr make_task_operator(const std::string& task, const std::vector<int64_t>& in_shape, torch::Generator gen) {
  if (task == "inpaint-box") return make_box_mask(in_shape);
  if (task == "inpaint-random") return make_random_mask(in_shape, 0.5, gen);
  if (task == "sr2") return make_avgpool(in_shape, 2);
  if (task == "sr4") return make_avgpool(in_shape, 4);
  if (task == "sr4-bicubic") return make_bicubic_downsample(in_shape, 4);
  if (task == "blur") return make_gaussian_blur(in_shape, 1.5, 0.02);
  if (task == "motion-blur") return make_motion_blur(in_shape, 7, 45, 0.05);
  if (task == "cs") return make_random_projection(in_shape, 0.25, gen);
  if (task == "denoise") return make_identity(in_shape);
  std::string known;
  for (auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown task '", task, "' (known: ", known, ")");
}

}  // namespace tweedie
