// NumPy .npy reader and writer (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
#include "tweedie/io/npy.h"

#include <cstring>
#include <regex>

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"

namespace tweedie {

torch::Tensor load_npy(const std::string& path) {
  const std::string b = read_file(path);
  if (b.size() < 10 || std::memcmp(b.data(), "\x93NUMPY", 6) != 0) fail(path, ": not a .npy file (bad magic)");
  const int major = (unsigned char)b[6];
  size_t hlen, off;
  if (major == 1) {
    hlen = (unsigned char)b[8] | ((unsigned char)b[9] << 8);
    off = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) fail(path, ": truncated .npy header");
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= size_t((unsigned char)b[8 + i]) << (8 * i);
    off = 12;
  } else {
    fail(path, ": unsupported .npy version ", major);
  }
  if (off + hlen > b.size()) fail(path, ": truncated .npy header");
  // numpy's own limit (max_header_size): longer headers would also overflow std::regex's recursion.
  if (hlen > 10000) fail(path, ": .npy header of ", hlen, " bytes is too long (at most 10000)");
  const std::string h = b.substr(off, hlen);
  std::smatch m;
  if (!std::regex_search(h, m, std::regex("'descr'\\s*:\\s*'([^']*)'"))) fail(path, ": .npy header lacks 'descr'");
  const std::string descr = m[1];
  if (!std::regex_search(h, m, std::regex("'fortran_order'\\s*:\\s*(True|False)")))
    fail(path, ": .npy header lacks 'fortran_order'");
  const bool fortran = m[1] == "True";
  if (!std::regex_search(h, m, std::regex("'shape'\\s*:\\s*\\(([^)]*)\\)"))) fail(path, ": .npy header lacks 'shape'");
  std::vector<int64_t> shape;
  {
    std::string s = m[1];
    std::regex num("\\s*(\\d+)\\s*(,|$)");
    int64_t count = 1;
    for (auto it = std::sregex_iterator(s.begin(), s.end(), num); it != std::sregex_iterator(); ++it) {
      const std::string digits = (*it)[1];
      const size_t nz = std::min(digits.find_first_not_of('0'), digits.size());
      if (digits.size() - nz > 13) fail(path, ": .npy shape too large");  // 2^40 has 13 digits
      const int64_t d = std::stoll(digits);
      if (d > (int64_t(1) << 40) || std::max<int64_t>(d, 1) > (int64_t(1) << 40) / count)
        fail(path, ": .npy shape too large");
      shape.push_back(d);
      count *= std::max<int64_t>(d, 1);
    }
  }
  torch::ScalarType st;
  size_t item;
  if (descr == "<f4" || descr == "=f4") st = torch::kFloat32, item = 4;
  else if (descr == "<f8" || descr == "=f8") st = torch::kFloat64, item = 8;
  else if (descr == "<f2" || descr == "=f2") st = torch::kFloat16, item = 2;
  else if (descr == "<i8" || descr == "=i8") st = torch::kInt64, item = 8;
  else if (descr == "<i4" || descr == "=i4") st = torch::kInt32, item = 4;
  else fail(path, ": unsupported .npy dtype '", descr, "' (supported: <f4, <f8, <f2, <i8, <i4)");
  int64_t n = 1;
  for (auto d : shape) n *= d;
  const size_t data = off + hlen;
  if (b.size() - data != size_t(n) * item)
    fail(path, ": .npy data has ", b.size() - data, " bytes, shape and dtype need ", size_t(n) * item);
  auto t = torch::empty(shape, torch::TensorOptions().dtype(st));
  if (n) std::memcpy(t.data_ptr(), b.data() + data, size_t(n) * item);
  if (fortran) {
    std::vector<int64_t> rev(shape.rbegin(), shape.rend());
    t = torch::empty(rev, torch::TensorOptions().dtype(st));
    if (n) std::memcpy(t.data_ptr(), b.data() + data, size_t(n) * item);
    std::vector<int64_t> perm;
    for (int64_t i = shape.size() - 1; i >= 0; --i) perm.push_back(i);
    t = t.permute(perm).contiguous();
  }
  return t;
}

void save_npy(const std::string& path, const torch::Tensor& t0) {
  const bool integer = !t0.is_floating_point();
  auto t = (integer ? t0.to(torch::kInt64) : t0.to(torch::kFloat32)).contiguous().cpu();
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 || i + 1 < t.dim() ? "," : "");
  shape += ")";
  std::string h = std::string("{'descr': '") + (integer ? "<i8" : "<f4") + "', 'fortran_order': False, 'shape': " +
                  shape + ", }";
  size_t total = 10 + h.size() + 1;
  h += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  out += char(h.size() & 0xff);
  out += char(h.size() >> 8);
  out += h;
  out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  write_file_atomic(path, out);
}

}  // namespace tweedie
