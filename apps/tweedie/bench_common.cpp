#include "bench_common.h"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli.h"

#include "tweedie/core/error.h"
#include "tweedie/io/fs.h"

namespace tweedie::cli {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) v.push_back(t);
  return v;
}

std::vector<int> positive_ints(const std::string& list, const char* cmd, const char* option) {
  std::vector<int> out;
  for (auto& b : split(list)) {
    try {
      size_t used = 0;
      out.push_back(std::stoi(b, &used));
      if (used != b.size()) throw std::invalid_argument(b);
    } catch (...) {
      fail(cmd, ": ", option, " entry '", b, "' is not an integer");
    }
    check(out.back() >= 1, cmd, ": ", option, " entries must be >= 1, got ", out.back());
  }
  return out;
}

Timing measure(const std::function<void()>& call, int reps, double min_time, Progress& prog, int& done) {
  call();
  std::vector<double> per;
  for (int r = 0; r < reps; ++r) {
    int calls = 0;
    const double t0 = now();
    double t = t0;
    do {
      call();
      ++calls;
      t = now();
    } while (t - t0 < min_time);
    per.push_back((t - t0) / calls);
    prog.update(++done);
  }
  std::sort(per.begin(), per.end());
  return {per[per.size() / 2], per.front(), per.back()};
}

std::string first_line_with(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key, 0) == 0) {
      auto c = line.find(':');
      return c == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", c + 1));
    }
  return "unknown";
}

std::string cpu_flags() {
  std::string flags = " " + first_line_with("/proc/cpuinfo", "flags") + " ", out;
  for (const char* f : {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    if (flags.find(std::string(" ") + f + " ") != std::string::npos) out += (out.empty() ? "" : " ") + std::string(f);
  return out;
}

std::string machine_bullets(const std::string& load) {
  std::ostringstream md;
  md << "- CPU: " << first_line_with("/proc/cpuinfo", "model name") << ", " << std::thread::hardware_concurrency()
     << " hardware threads (" << cpu_flags() << ")\n"
     << "- threads: torch intra-op " << at::get_num_threads() << ", OpenBLAS 1 (`configure_threads`, as every command)\n"
     << "- load average at start (1, 5, 15 min, running/total, last pid): " << load << "\n"
     << "- libtorch " << TORCH_VERSION << "\n";
  return md.str();
}

std::string file_identity(const std::string& path) {
  const std::string bytes = read_file(path);
  uint64_t h = 1469598103934665603ull;  // FNV-1a, 64 bit
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return path.substr(path.find_last_of('/') + 1) + " (fnv1a64 " + hex + ")";
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string fmt_time(double s) { return s >= 1 ? fmt("%.2f s", s) : fmt("%.0f ms", s * 1e3); }

}  // namespace tweedie::cli
